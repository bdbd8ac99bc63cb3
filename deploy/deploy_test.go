// Package deploy_test checks the deployment files under deploy/: the
// Kubernetes manifests decode strictly against the Kubernetes API types, the
// Prometheus rules pass promtool's check and unit tests, and every metric the
// rules and the Grafana dashboard name is one tenantmigrate exposes.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/metrics"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// decodeStrict decodes one YAML document into out, refusing unknown and
// duplicate fields, so a misspelt field name fails.
func decodeStrict(t *testing.T, doc []byte, out any) {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict(doc)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(out), "%s", doc)
}

// TestKubernetesManifests decodes every document of deploy/kubernetes
// against its API type and checks what the README promises of them.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("kubernetes/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	kinds := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			var meta struct{ Kind string }
			require.NoError(t, yaml.Unmarshal(doc, &meta), f)
			kinds[meta.Kind]++
			switch meta.Kind {
			case "Deployment":
				var d appsv1.Deployment
				decodeStrict(t, doc, &d)
				spec := d.Spec.Template.Spec
				c := spec.Containers[0]
				require.Equal(t, []string{"serve"}, c.Args)
				require.Equal(t, "/health", c.ReadinessProbe.HTTPGet.Path)
				require.Equal(t, "/health", c.LivenessProbe.HTTPGet.Path)
				shutdown := envValue(c.Env, "SHUTDOWN_TIMEOUT")
				d30, err := time.ParseDuration(shutdown)
				require.NoError(t, err)
				// The grace period covers the shutdown timeout plus the 10 s
				// that runs cancelled at its deadline get to roll back.
				require.GreaterOrEqual(t, time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second, d30+10*time.Second)
				requireSecretEnv(t, c.Env, "DATABASE_URL", "ENCRYPTION_KEY", "ADMIN_API_KEYS")
				require.True(t, *spec.SecurityContext.RunAsNonRoot)
			case "Job":
				var j batchv1.Job
				decodeStrict(t, doc, &j)
				c := j.Spec.Template.Spec.Containers[0]
				require.Equal(t, "migrate", c.Args[0])
				require.Contains(t, c.Args, "--all")
				requireSecretEnv(t, c.Env, "DATABASE_URL", "ENCRYPTION_KEY")
			case "Service":
				var s corev1.Service
				decodeStrict(t, doc, &s)
			case "Secret":
				var s corev1.Secret
				decodeStrict(t, doc, &s)
			default:
				t.Errorf("%s: unexpected kind %q", f, meta.Kind)
			}
		}
	}
	require.Equal(t, map[string]int{"Deployment": 1, "Job": 1, "Service": 1, "Secret": 1}, kinds)

	// The strict decoding does catch a misspelt field.
	var d appsv1.Deployment
	js, err := yaml.YAMLToJSONStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 2\n"))
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	require.ErrorContains(t, dec.Decode(&d), "replica")
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func requireSecretEnv(t *testing.T, env []corev1.EnvVar, names ...string) {
	t.Helper()
	for _, n := range names {
		i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == n })
		require.GreaterOrEqual(t, i, 0, "env %s", n)
		require.Empty(t, env[i].Value, "%s must come from a Secret, not a literal", n)
		require.NotNil(t, env[i].ValueFrom.SecretKeyRef, "env %s", n)
	}
}

// promtool returns promtool's path, skipping the test without it (CI
// installs it and fails instead).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (Debian package prometheus; .ci/run installs it)")
		}
		t.Skip("promtool is not installed (Debian package prometheus)")
	}
	return p
}

// TestPrometheusRules runs promtool check rules and promtool test rules.
func TestPrometheusRules(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

var metricName = regexp.MustCompile(`\btenantmigrate_[a-z_]+`)

// TestMonitoredMetricsExist: every tenantmigrate_* metric the alert rules
// and the dashboard name is in a live /metrics, after a tenant was migrated
// through the gate (so counters and the histogram have series).
func TestMonitoredMetricsExist(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var m *metrics.Metrics
	o, err := tenantmigrate.New(ctx, tenantmigrate.Config{
		DatabaseURL:   pgtest.NewDatabase(t),
		EncryptionKey: "deploy-test-key-0123456789",
		Migrations:    fleettest.Migrations("CREATE TABLE a (id int);"),
		Hooks: tenantmigrate.Hooks{
			OnGateDecision: func(d tenantmigrate.GateDecision) { m.ObserveGate(string(d)) },
			OnMigrationRun: func(s tenantmigrate.Strategy, result string, d time.Duration) { m.ObserveRun(string(s), result, d) },
		},
	})
	require.NoError(t, err)
	t.Cleanup(o.Close)
	m = metrics.New(metrics.Config{Source: o})
	_, err = o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: pgtest.NewDatabase(t)})
	require.NoError(t, err)
	require.NoError(t, o.EnsureMigrated(ctx, "acme"))

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	exposed := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "tenantmigrate_") {
			exposed[metricName.FindString(line)] = true
		}
	}

	named := map[string]string{}
	for _, f := range []string{"prometheus/alerts.yml", "grafana/tenantmigrate.json"} {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, n := range metricName.FindAllString(string(data), -1) {
			named[n] = f
		}
	}
	require.NotEmpty(t, named)
	for n, f := range named {
		require.True(t, exposed[n], "%s names %s, which /metrics does not expose", f, n)
	}
}
