package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// allCommands returns root and every command under it, cobra's own help and
// completion commands aside (they are added at execution).
func allCommands() []*cobra.Command {
	var cmds []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		cmds = append(cmds, c)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(io.Discard, io.Discard))
	return cmds
}

// commandArgs is the command line of c below the root.
func commandArgs(c *cobra.Command) []string {
	path := strings.Fields(c.CommandPath())
	return path[1:]
}

func TestHelp(t *testing.T) {
	t.Parallel()
	cmds := allCommands()
	require.Greater(t, len(cmds), 9)
	for _, c := range cmds {
		t.Run(strings.ReplaceAll(c.CommandPath(), " ", "_"), func(t *testing.T) {
			t.Parallel()
			require.NotEmpty(t, strings.TrimSpace(c.Example), "%s has no Example", c.CommandPath())
			require.NotEmpty(t, c.Short)
			r := runCLI(t, append(commandArgs(c), "--help")...)
			requireCode(t, 0, r)
			require.Contains(t, r.stdout, "Usage:")
			require.Contains(t, r.stdout, "Examples:")
			require.Contains(t, r.stdout, strings.TrimSpace(c.Example))
		})
	}
}

// ownFlags calls fn with every flag c defines itself, help aside.
func ownFlags(c *cobra.Command, fn func(*pflag.Flag)) {
	c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			fn(f)
		}
	})
}

// TestFlagsHaveEnv: every flag also reads an environment variable, named in
// its help.
func TestFlagsHaveEnv(t *testing.T) {
	t.Parallel()
	for _, c := range allCommands() {
		ownFlags(c, func(f *pflag.Flag) {
			env := flagEnv(f)
			require.NotEmpty(t, env, "%s --%s has no environment variable (bindEnv)", c.CommandPath(), f.Name)
			require.Contains(t, f.Usage, "$"+env)
		})
	}
}

// TestREADMEFlagReference: README.md mentions every flag and its variable.
func TestREADMEFlagReference(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if os.IsNotExist(err) {
		t.Skip("README.md does not exist yet: this test checks that it names every flag (--name) and its environment variable")
	}
	require.NoError(t, err)
	readme := string(b)
	var missing []string
	for _, c := range allCommands() {
		ownFlags(c, func(f *pflag.Flag) {
			if !strings.Contains(readme, "--"+f.Name) {
				missing = append(missing, fmt.Sprintf("%s --%s", c.CommandPath(), f.Name))
			}
			if env := flagEnv(f); env != "" && !strings.Contains(readme, env) {
				missing = append(missing, fmt.Sprintf("%s (of %s --%s)", env, c.CommandPath(), f.Name))
			}
		})
	}
	if len(missing) > 0 {
		t.Errorf("README.md does not mention:\n  %s", strings.Join(missing, "\n  "))
	}
}
