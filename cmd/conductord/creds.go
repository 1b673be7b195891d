package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/cmdline"
)

const credsUsage = `usage:
  conductord creds add --role ROLE [--types T1,T2] [--host-id H] [--namespace NS]
                       [--out FILE] [--replace] [--data DIR] ID
  conductord creds list [--data DIR]
  conductord creds revoke [--data DIR] ID

Roles: submitter (queues and reads jobs of its --types, or of every type),
host (one workerd: its --host-id is --host-id, default ID; takes jobs of
its --types),
operator (pool commands, dead jobs, cancels, events, logs), admin.
add prints the new token once (or writes it to --out, mode 0600); only its
hash is kept. A running conductord reads the file again within a second:
a revoked credential's connections are closed at once. --namespace issues
a credential of another namespace, whose conductord (--nats-url) shares
this one's NATS server in an account of its own.
`

// creds runs `conductord creds`: it edits the credentials file, whether or
// not conductord runs.
// Help (-h, --help, help) prints the usage on stdout and exits 0; a
// command line it cannot take is a usage error (exit 2), said on stderr
// with the usage.
func creds(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return credsUsageError(stderr, errors.New("creds: want add, list or revoke"))
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, credsUsage)
		return flag.ErrHelp
	case "add", "list", "revoke":
	default:
		return credsUsageError(stderr, fmt.Errorf("creds: unknown command %q: want add, list or revoke", args[0]))
	}
	fs := flag.NewFlagSet("conductord creds "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	data := fs.String("data", "./data", "conductord's data directory, which holds credentials.json")
	file := fs.String("credentials", "", "the credentials file (default --data/credentials.json)")
	var role, types, out, hostID, namespace *string
	var replace *bool
	if args[0] == "add" {
		role = fs.String("role", "", "submitter, host, operator or admin")
		types = fs.String("types", "", "comma-separated job types a submitter or host is limited to (default: every type)")
		hostID = fs.String("host-id", "", "a host's workerd --host-id (default: the credential's id)")
		namespace = fs.String("namespace", "", "another namespace the credential is for (default: this conductord's)")
		out = fs.String("out", "", "write the token to this file (mode 0600) instead of standard output")
		replace = fs.Bool("replace", false, "issue an existing credential again: its old token stops working")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, credsUsage)
			return err
		}
		return credsUsageError(stderr, err)
	}
	path := *file
	if path == "" {
		path = filepath.Join(*data, auth.FileName)
	}
	switch args[0] {
	case "list":
		if fs.NArg() != 0 {
			return credsUsageError(stderr, fmt.Errorf("creds list: unexpected argument %q", fs.Arg(0)))
		}
		return listCreds(path, stdout)
	case "revoke":
		if fs.NArg() != 1 {
			return credsUsageError(stderr, errors.New("creds revoke: want one credential id"))
		}
		if err := auth.Revoke(path, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "credential %s revoked\n", fs.Arg(0))
		return nil
	case "add":
		if fs.NArg() != 1 {
			return credsUsageError(stderr, errors.New("creds add: want one credential id after the flags"))
		}
		r, err := auth.ParseRole(*role)
		if err != nil {
			return fmt.Errorf("creds add --role: %w", err)
		}
		c := auth.Credential{ID: fs.Arg(0), Role: r, HostID: *hostID, Namespace: *namespace}
		if *types != "" {
			c.Types = strings.Split(*types, ",")
		}
		return addCred(path, c, *out, *replace, stdout, stderr)
	}
	panic("unreachable: creds command " + args[0])
}

// credsUsageError says err and the usage of creds on stderr, and returns
// err as a usage error (exit 2).
func credsUsageError(stderr io.Writer, err error) error {
	fmt.Fprintf(stderr, "conductord: %v\n%s", err, credsUsage)
	return cmdline.UsageError{Err: err}
}

func addCred(path string, c auth.Credential, out string, replace bool, stdout, stderr io.Writer) error {
	var f *os.File
	if out != "" {
		// Made before the credential, so that a token is never issued
		// with nowhere to go.
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if replace {
			flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		var err error
		if f, err = os.OpenFile(out, flags, 0o600); err != nil {
			return fmt.Errorf("creds add --out: %w", err)
		}
		defer f.Close()
	}
	tok, err := auth.Add(path, c, replace)
	if err != nil {
		if f != nil {
			os.Remove(out)
		}
		return err
	}
	if f == nil {
		fmt.Fprintln(stdout, tok)
		fmt.Fprintf(stderr, "credential %s (%s) added to %s; its token is shown once, above\n", c.ID, c.Role, path)
		return nil
	}
	if _, err := fmt.Fprintln(f, tok); err != nil {
		return fmt.Errorf("creds add --out: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("creds add --out: %w", err)
	}
	fmt.Fprintf(stderr, "credential %s (%s) added to %s; its token is in %s\n", c.ID, c.Role, path, out)
	return nil
}

func listCreds(path string, stdout io.Writer) error {
	list, err := auth.ReadFile(path)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tTYPES\tHOST ID\tNAMESPACE\tCREATED")
	for _, c := range list {
		ts := strings.Join(c.Types, ",")
		if ts == "" {
			ts = "*"
		}
		host := "-"
		if c.Role == auth.Host {
			host = c.Host()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Role, ts, host, cmp.Or(c.Namespace, "-"), c.Created.Format("2006-01-02T15:04:05Z"))
	}
	return tw.Flush()
}
