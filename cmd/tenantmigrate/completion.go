package main

import (
	"github.com/spf13/cobra"
)

// newCompletionCmd replaces cobra's default completion command, to give it
// an Example like every other command.
func newCompletionCmd(g *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script",
		Long: `completion prints the script that completes tenantmigrate's commands and flags
in the given shell. Load it in the shell's startup file.`,
		Example: `  source <(tenantmigrate completion bash)
  tenantmigrate completion zsh > "${fpath[1]}/_tenantmigrate"
  tenantmigrate completion fish > ~/.config/fish/completions/tenantmigrate.fish`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(g.stdout, true)
			case "zsh":
				return root.GenZshCompletion(g.stdout)
			case "fish":
				return root.GenFishCompletion(g.stdout, true)
			default:
				return root.GenPowerShellCompletionWithDesc(g.stdout)
			}
		},
	}
}
