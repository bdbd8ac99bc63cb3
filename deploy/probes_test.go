package deploy_test

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// healthPingTimeout is internal/httpapi's healthTimeout: how long GET
// /health may wait for the control plane before it answers 503.
const healthPingTimeout = 2 * time.Second

// TestHealthProbesOutwaitHealthTimeout: a /health probe must wait at
// least as long as /health may take to answer, or a slow but answering
// control plane counts as a failed probe while /health would say 200.
func TestHealthProbesOutwaitHealthTimeout(t *testing.T) {
	data, err := os.ReadFile("kubernetes/serve.yaml")
	require.NoError(t, err)
	var d appsv1.Deployment
	require.NoError(t, yaml.Unmarshal(bytes.Split(data, []byte("\n---\n"))[0], &d))
	c := d.Spec.Template.Spec.Containers[0]
	for name, p := range map[string]int32{"readiness": c.ReadinessProbe.TimeoutSeconds, "liveness": c.LivenessProbe.TimeoutSeconds} {
		if p == 0 {
			p = 1 // Kubernetes' default
		}
		require.Greater(t, time.Duration(p)*time.Second, healthPingTimeout, "%s probe timeoutSeconds %d", name, p)
	}
}
