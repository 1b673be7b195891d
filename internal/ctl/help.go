package ctl

import (
	"strings"

	"github.com/spf13/cobra"
)

// helpCmd is `conductorctl help [COMMAND...]`: the command's help on
// stdout; an unknown topic is a usage error (exit 2) with a did-you-mean,
// as an unknown command is. (cobra's own help command printed the root's
// help, exit 0, for a topic it did not know.)
func helpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND...]",
		Short: "help about any command",
		Long:  "Print the help of a command (conductorctl help lookup get), or of conductorctl.",
		RunE: func(_ *cobra.Command, args []string) error {
			target := root
			for i, name := range args {
				next := subcommand(target, name)
				if next == nil {
					topic := strings.Join(args[:i+1], " ")
					if s := target.SuggestionsFor(name); len(s) > 0 {
						return usageErrorf("unknown help topic %q; did you mean %s? run conductorctl help", topic, strings.Join(s, " or "))
					}
					return usageErrorf("unknown help topic %q; run conductorctl help", topic)
				}
				target = next
			}
			target.InitDefaultHelpFlag()
			return target.Help()
		},
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target := root
			for _, name := range args {
				if target = subcommand(target, name); target == nil {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
			}
			var names []cobra.Completion
			for _, c := range target.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, cobra.CompletionWithDesc(c.Name(), c.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

// subcommand is parent's command called name (or by an alias of it), or
// nil.
func subcommand(parent *cobra.Command, name string) *cobra.Command {
	for _, c := range parent.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}
