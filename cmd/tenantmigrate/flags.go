package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envAnnotation names, on a flag, the environment variable it also reads.
const envAnnotation = "tenantmigrate_env"

// bindEnv records that flag name of fs also reads the environment variable
// env, and mentions it in the flag's help.
func bindEnv(fs *pflag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("bindEnv: no flag " + name)
	}
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
	f.Usage = fmt.Sprintf("%s [$%s]", f.Usage, env)
}

// applyEnv sets every flag of cmd that was not given on the command line
// from its environment variable, when that is set and not empty. Flags beat
// the environment; the environment beats defaults.
func applyEnv(cmd *cobra.Command) error {
	var firstErr error
	apply := func(f *pflag.Flag) {
		envs := f.Annotations[envAnnotation]
		if f.Changed || len(envs) == 0 || firstErr != nil {
			return
		}
		v := os.Getenv(envs[0])
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			firstErr = usageErr("invalid $%s: %v", envs[0], err)
			return
		}
		f.Changed = true
	}
	cmd.Flags().VisitAll(apply)
	cmd.InheritedFlags().VisitAll(apply)
	return firstErr
}

// flagEnv returns the environment variable bound to flag f, or "".
func flagEnv(f *pflag.Flag) string {
	if envs := f.Annotations[envAnnotation]; len(envs) > 0 {
		return envs[0]
	}
	return ""
}

// isUsageError reports whether err came from cobra's or pflag's parsing of
// the command line.
func isUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand", "unknown command", "invalid argument", "flag needs an argument", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// keyList is the value of --previous-encryption-keys: secrets separated by
// commas, spaces around each ignored, empty ones dropped; the flag may be
// repeated. Parsing never fails and String shows nothing, so neither an
// error nor --help can print a key.
type keyList []string

func (k *keyList) String() string { return "" }

func (k *keyList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*k = append(*k, s)
		}
	}
	return nil
}

func (k *keyList) Type() string { return "keys" }
