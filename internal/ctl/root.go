package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/conductor-run/conductor/internal/logflags"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/internal/version"
)

// Exit codes of conductorctl (docs/cli.md, "Exit codes").
const (
	ExitOK        = 0
	ExitFailure   = 1 // any error not below
	ExitUsage     = 2 // unknown command or flag, wrong arguments, bad flag value
	ExitNotEnded  = 3 // submit --wait: the job is dead, or not ended in time
	ExitRefused   = 4 // a host refused a pool command, or did not answer it
	ExitUnhealthy = 5 // health: conductord cannot queue jobs or store states
)

// ExitError is an error that asks for a specific exit code: 3 means a job
// ended dead (or not in time) after submit --wait; 4 means a host refused a
// pool command or did not answer it; 5 means health found conductord
// unhealthy.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

// UsageError is a command line conductorctl cannot run: an unknown command
// or flag, a wrong number of arguments, a bad flag value. It exits 2, with
// the usage of the command on stderr.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// app is one run of conductorctl: its global flags, its output, and the
// API client built from them before a command runs.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	server         string
	token          string
	tokenFile      string
	tls            tlsconf.Files
	requestTimeout time.Duration
	output         outputFlag
	logFormat      string
	logLevel       string
	log            *slog.Logger
	api            *client // set by the root's PersistentPreRunE
}

// Main runs conductorctl with args (without the program name) and returns
// its exit code; it prints errors (and, for usage errors, the command's
// usage) on stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd, err := execute(ctx, args, os.Stdin, stdout, stderr)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "conductorctl:", err)
	var usage *UsageError
	var exit *ExitError
	switch {
	case errors.As(err, &usage):
		if cmd != nil {
			fmt.Fprintln(stderr)
			fmt.Fprint(stderr, cmd.UsageString())
		}
		return ExitUsage
	case errors.As(err, &exit):
		return exit.Code
	}
	return ExitFailure
}

// Run runs conductorctl with args (without the program name) and returns
// its error: a *UsageError, an *ExitError, or any other error (exit 1).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	_, err := execute(ctx, args, os.Stdin, stdout, stderr)
	return err
}

func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (*cobra.Command, error) {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.root()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if a.api != nil {
		a.api.http.CloseIdleConnections()
	}
	return cmd, err
}

const rootLong = `conductorctl drives a conductor through conductord's HTTP API.

The server comes from --server or CONDUCTOR_SERVER (default http://127.0.0.1:7070;
a bare HOST:PORT means http://), the token from --token-file, CONDUCTOR_TOKEN or --token.
Read commands print tables; -o json prints the API's JSON (indented), -o wide more columns.
Exit codes: 0 ok, 1 error, 2 usage error, 3 submit --wait: job dead or not ended,
4 a host refused a pool command, 5 conductord unhealthy. See docs/cli.md.`

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "conductorctl",
		Short:         "the conductor's command line",
		Long:          rootLong,
		Version:       version.Get().String(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				return usageErrorf("unknown command %q; did you mean %s? run conductorctl help", args[0], strings.Join(s, " or "))
			}
			return usageErrorf("unknown command %q; run conductorctl help", args[0])
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if needsNoAPI(cmd) {
				return nil
			}
			return a.setup()
		},
	}
	root.SuggestionsMinimumDistance = 2
	root.SetVersionTemplate("conductorctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		if err.Error() == "unknown flag: --json" {
			err = fmt.Errorf("%w (for JSON, use -o json)", err)
		}
		return &UsageError{Err: err}
	})
	f := root.PersistentFlags()
	f.StringVar(&a.server, "server", "", "conductord's HTTP API: http://HOST:PORT, https://HOST:PORT or HOST:PORT (env CONDUCTOR_SERVER; default http://127.0.0.1:7070)")
	f.StringVar(&a.token, "token", "", "API token (env CONDUCTOR_TOKEN); on the command line it shows in the process list: prefer --token-file")
	f.StringVar(&a.tokenFile, "token-file", "", "a file holding the API token (chmod 600)")
	f.StringVar(&a.tls.CA, "tls-ca", "", "PEM file of the issuer of the API's certificate, for an https:// --server (default: the system's roots; env CONDUCTOR_TLS_CA)")
	f.StringVar(&a.tls.Cert, "tls-cert", "", "PEM file of a client certificate to present (with --tls-key)")
	f.StringVar(&a.tls.Key, "tls-key", "", "PEM file of the key of --tls-cert")
	f.DurationVar(&a.requestTimeout, "request-timeout", defaultRequestTimeout, "how long a call waits for conductord to answer (0: no limit; submit --wait adds its wait)")
	f.VarP(&a.output, "output", "o", "output of read commands: table (the default; job: JSON unless -o table), json (the API's JSON, indented) or wide (more columns)")
	f.StringVar(&a.logFormat, "log-format", "text", "format of conductorctl's own diagnostics on stderr: text or json")
	f.StringVar(&a.logLevel, "log-level", "warn", "level of conductorctl's own diagnostics: debug, info, warn or error")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "wide"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddGroup(&cobra.Group{ID: "jobs", Title: "Jobs:"}, &cobra.Group{ID: "pools", Title: "Pools and hosts:"},
		&cobra.Group{ID: "more", Title: "Lookups, messages, events:"})
	help := helpCmd(root)
	help.GroupID = "more"
	root.SetHelpCommand(help)
	root.SetCompletionCommandGroupID("more")
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add("jobs", a.submitCmd(), a.jobCmd(), a.jobsCmd(), a.deadCmd(), a.retryCmd(), a.cancelCmd(), a.abortCmd())
	add("pools", a.poolsCmd(), a.workersCmd(), a.hostsCmd(), a.logsCmd(), a.topCmd(), a.statsCmd(), a.healthCmd())
	for _, op := range poolOps {
		add("pools", a.poolCommandCmd(op))
	}
	add("more", a.eventsCmd(), a.lookupCmd(), a.sendCmd(), a.broadcastCmd(), a.versionCmd())
	a.addCompletions(root)
	// cobra's completion command printed its help, exit 0, for a shell it
	// does not know (completion ksh > file wrote the help as a script).
	// (It takes the output when it is made.)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.InitDefaultCompletionCmd()
	if c := subcommand(root, "completion"); c != nil {
		c.Args = func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown shell %q: want bash, zsh, fish or powershell", args[0])
			}
			return nil
		}
		c.RunE = func(*cobra.Command, []string) error {
			return usageErrorf("usage: conductorctl completion bash|zsh|fish|powershell")
		}
	}
	return root
}

// needsNoAPI tells the commands that call no API, and run whatever the
// server flags and environment say: help, completion, the root alone.
func needsNoAPI(cmd *cobra.Command) bool {
	if !cmd.HasParent() {
		return true
	}
	for c := cmd; c != nil; c = c.Parent() {
		switch c.Name() {
		case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return true
		}
	}
	return false
}

// setup checks the global flags and builds the logger and the API client.
func (a *app) setup() error {
	log, err := newLogger(a.stderr, a.logFormat, a.logLevel)
	if err != nil {
		return err
	}
	a.log = log
	server, serverFrom := a.server, "--server"
	if server == "" {
		server, serverFrom = os.Getenv(names.EnvServer), names.EnvServer
	}
	token, tokenFrom := a.token, "--token"
	if token == "" {
		token, tokenFrom = os.Getenv(names.EnvToken), names.EnvToken
	}
	if a.tls.CA == "" {
		a.tls.CA = os.Getenv(names.EnvTLSCA)
	}
	if a.requestTimeout < 0 {
		return usageErrorf("--request-timeout: want 0 (no limit) or more, not %s", a.requestTimeout)
	}
	a.api, err = newClient(clientConfig{
		server: server, token: token, tokenFile: a.tokenFile, tls: a.tls, requestTimeout: a.requestTimeout,
		serverFrom: serverFrom, tokenFrom: tokenFrom,
		output: a.output.format, out: a.stdout, stdin: a.stdin, log: log,
	})
	return err
}

// newLogger is conductorctl's logger of its own diagnostics, on stderr; a
// bad flag value is a usage error.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	log, err := logflags.New(w, format, level)
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	return log, nil
}

// nargs checks that a command has lo to hi positional arguments
// (hi < 0: no maximum), else a usage error naming its usage line.
func nargs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || (hi >= 0 && len(args) > hi) {
			return usageErrorf("usage: conductorctl %s", cmd.Use)
		}
		return nil
	}
}
