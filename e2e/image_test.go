package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// imageTestEnabled reports whether the container image test runs: asked for
// with TENANTMIGRATE_IMAGE=1, or in CI (CI=true) when podman is installed.
func imageTestEnabled() (bool, string) {
	if os.Getenv("TENANTMIGRATE_IMAGE") == "1" {
		return true, ""
	}
	if os.Getenv("CI") == "true" {
		if _, err := exec.LookPath("podman"); err == nil {
			return true, ""
		}
		return false, "CI without podman"
	}
	return false, "set TENANTMIGRATE_IMAGE=1 to build and run the container image (needs podman or docker)"
}

// podman runs podman as this machine needs it (cgroupfs, runc, no default
// ulimits through CONTAINERS_CONF) and returns its stdout.
func podman(t *testing.T, conf string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("podman", append([]string{"--cgroup-manager", "cgroupfs", "--runtime", "runc"}, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// TestContainerImage builds the image with deploy/image/build.sh and runs it
// against the test PostgreSQL: serve answers /health 200 from the container
// as a non-root user, migrate --all migrates a tenant, and the image holds
// only the binary, the CA certificates, passwd and group.
func TestContainerImage(t *testing.T) {
	if ok, why := imageTestEnabled(); !ok {
		t.Skip(why)
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("the image test drives podman; docker users can run deploy/image/build.sh by hand")
	}
	conf := filepath.Join(t.TempDir(), "containers.conf")
	require.NoError(t, os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n"), 0o644))

	tag := fmt.Sprintf("localhost/tenantmigrate:e2e-%d", os.Getpid())
	build := exec.Command("bash", "../deploy/image/build.sh", tag)
	build.Env = append(os.Environ(), "CONTAINER_TOOL=podman", "CONTAINERS_CONF="+conf)
	var out, errOut bytes.Buffer
	build.Stdout, build.Stderr = &out, &errOut
	require.NoError(t, build.Run(), "build.sh: %s", errOut.String())
	require.Equal(t, tag, strings.TrimSpace(out.String()), "build.sh prints the tag")
	t.Cleanup(func() { _, _ = podman(t, conf, "rmi", "-f", tag) })

	// The image's files: nothing but the binary, certificates and passwd.
	require.Equal(t, []string{"etc/group", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "tenantmigrate"},
		imageFiles(t, conf, tag))
	cfgOut, err := podman(t, conf, "image", "inspect", "--format",
		"{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.ExposedPorts}}", tag)
	require.NoError(t, err)
	require.Equal(t, `65532:65532|["/tenantmigrate"]|["serve"]|{"8080/tcp":{}}`, strings.TrimSpace(cfgOut))

	// A control plane with one tenant, and migrations the non-root user can read.
	cp := pgtest.NewDatabase(t)
	tenants := registerTenants(t, cp, "img", 1, 1)
	migrations := t.TempDir()
	require.NoError(t, os.Chmod(migrations, 0o755))
	for name, f := range fleettest.Migrations("CREATE TABLE accounts (id bigserial PRIMARY KEY);", "ALTER TABLE accounts ADD COLUMN name text;") {
		require.NoError(t, os.WriteFile(filepath.Join(migrations, name), f.Data, 0o644))
	}
	port := freePort(t)
	env := []string{
		"-e", "DATABASE_URL=" + cp, "-e", "ENCRYPTION_KEY=" + encryptionKey,
		"-e", "MIGRATIONS_DIR=/migrations", "-v", migrations + ":/migrations:ro",
	}

	// serve, detached; the host network reaches the test PostgreSQL on 127.0.0.1.
	name := fmt.Sprintf("tenantmigrate-e2e-%d", os.Getpid())
	run := append([]string{"run", "-d", "--name", name, "--network", "host",
		"-e", "LISTEN_ADDR=127.0.0.1:" + port}, env...)
	_, err = podman(t, conf, append(run, tag)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := podman(t, conf, "logs", name)
			t.Logf("container logs:\n%s", logs)
		}
		_, _ = podman(t, conf, "rm", "-f", "-t", "5", name)
	})
	waitFor(t, 60*time.Second, "/health 200 from the container", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	pid, err := podman(t, conf, "inspect", "--format", "{{.State.Pid}}", name)
	require.NoError(t, err)
	status, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(pid), "status"))
	require.NoError(t, err)
	require.Regexp(t, `(?m)^Uid:\s+65532\s`, string(status), "serve runs as the non-root user")

	// migrate --all from the image migrates the tenant.
	_, err = podman(t, conf, append(append([]string{"run", "--rm", "--network", "host"}, env...), tag, "migrate", "--all", "--progress", "plain")...)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, fleettest.AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
}

// imageFiles lists the regular files of the image's layers, sorted.
func imageFiles(t *testing.T, conf, tag string) []string {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	_, err := podman(t, conf, "save", "--format", "docker-archive", "-o", archive, tag)
	require.NoError(t, err)
	layers := map[string][]byte{}
	var manifest []struct{ Layers []string }
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		if h.Name == "manifest.json" {
			require.NoError(t, json.Unmarshal(data, &manifest))
		} else {
			layers[h.Name] = data
		}
	}
	require.Len(t, manifest, 1)
	var files []string
	for _, l := range manifest[0].Layers {
		lr := tar.NewReader(bytes.NewReader(layers[l]))
		for {
			h, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			if h.Typeflag == tar.TypeReg {
				files = append(files, h.Name)
			}
		}
	}
	slices.Sort(files)
	return files
}

// freePort returns a TCP port free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)
	return port
}
