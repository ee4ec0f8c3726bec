package deploy

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/kreplay/kreplay/topology"
)

// deploy/k8s/*.yaml are parsed document by document (multi-document files allowed).

// k8sObject is the part of a manifest the tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       k8sSpec           `yaml:"spec"`
	file       string
}

type k8sSpec struct {
	// Deployment
	Replicas int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
	// Service (its selector is a plain map; Deployment's is under matchLabels)
	Type        string            `yaml:"type"`
	ServicePick map[string]string `yaml:"-"`
	Ports       []struct {
		Name       string    `yaml:"name"`
		Port       int       `yaml:"port"`
		TargetPort yaml.Node `yaml:"targetPort"`
	} `yaml:"ports"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name     string `yaml:"name"`
				Key      string `yaml:"key"`
				Optional bool   `yaml:"optional"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

// loadManifests parses every document of every deploy/k8s/*.yaml.
func loadManifests(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "k8s", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var out []k8sObject
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		dec := yaml.NewDecoder(strings.NewReader(string(raw)))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "parse %s", f)
			if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
				continue // an empty document
			}
			var o k8sObject
			require.NoError(t, doc.Decode(&o), "decode %s", f)
			if o.Kind == "Service" {
				var svc struct {
					Spec struct {
						Selector map[string]string `yaml:"selector"`
					} `yaml:"spec"`
				}
				require.NoError(t, doc.Decode(&svc))
				o.Spec.ServicePick = svc.Spec.Selector
			}
			o.file = filepath.Base(f)
			require.NotEmpty(t, o.APIVersion, "%s: a document without apiVersion", f)
			require.NotEmpty(t, o.Kind, "%s: a document without kind", f)
			require.Empty(t, o.Metadata.Namespace, "%s: %s %s: the manifests are namespace-agnostic (kubectl apply -n)", f, o.Kind, o.Metadata.Name)
			out = append(out, o)
		}
	}
	return out
}

func only(t *testing.T, objs []k8sObject, kind string) k8sObject {
	t.Helper()
	var found []k8sObject
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	require.Len(t, found, 1, "want exactly one %s in deploy/k8s", kind)
	return found[0]
}

// containerPort resolves a probe's or a Service's port (a number or a port name) to the
// container's port number.
func containerPort(t *testing.T, c container, n yaml.Node) int {
	t.Helper()
	if p, err := strconv.Atoi(n.Value); err == nil {
		return p
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort
		}
	}
	t.Fatalf("port %q is not a port of container %s", n.Value, c.Name)
	return 0
}

func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	objs := loadManifests(t)
	dep := only(t, objs, "Deployment")
	svc := only(t, objs, "Service")
	cm := only(t, objs, "ConfigMap")
	secret := only(t, objs, "Secret")

	require.Equal(t, "apps/v1", dep.APIVersion)
	require.Equal(t, 2, dep.Spec.Replicas)
	pod := dep.Spec.Template.Spec
	for k, v := range dep.Spec.Selector.MatchLabels {
		require.Equal(t, v, dep.Spec.Template.Metadata.Labels[k], "the Deployment's selector must match its pods")
	}
	require.GreaterOrEqual(t, pod.TerminationGracePeriodSeconds, 30,
		"kreplay finishes the batch in flight and commits on SIGTERM (serve --shutdown-timeout defaults to 15s)")
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	require.Equal(t, "kreplay:latest", c.Image)
	_, cmd := dockerfileEntrypoint(t)
	require.Equal(t, cmd, c.Args, "the same command as the image's default")

	// The config: the ConfigMap mounted where --config points.
	configPath := flagValue(c.Args, "--config")
	var cmVolume string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name {
			cmVolume = v.Name
		}
	}
	require.NotEmpty(t, cmVolume, "no volume of the ConfigMap %s", cm.Metadata.Name)
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == cmVolume {
			mounted = filepath.Join(m.MountPath, "kreplay.yaml") == configPath
			require.True(t, m.ReadOnly)
		}
	}
	require.True(t, mounted, "the ConfigMap's kreplay.yaml must be at %s", configPath)

	// Environment from the Secret, the control secret optional.
	env := map[string]string{} // name -> secret key
	for _, e := range c.Env {
		require.Empty(t, e.Value, "%s: deployment settings come from the Secret, not literals", e.Name)
		require.NotNil(t, e.ValueFrom, e.Name)
		if e.Name == "KREPLAY_INSTANCE_ID" {
			// Static membership: the pod's name, stable across its container's restarts.
			require.NotNil(t, e.ValueFrom.FieldRef, "%s: want a fieldRef", e.Name)
			require.Equal(t, "metadata.name", e.ValueFrom.FieldRef.FieldPath)
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		require.NotNil(t, ref, "%s: want a secretKeyRef", e.Name)
		require.Equal(t, secret.Metadata.Name, ref.Name, "%s", e.Name)
		require.Equal(t, e.Name == "KREPLAY_CONTROL_SECRET", ref.Optional, "%s: only the control secret is optional", e.Name)
		if !ref.Optional {
			require.Contains(t, secret.StringData, ref.Key, "%s: the example Secret has no key %s", e.Name, ref.Key)
		}
		env[e.Name] = ref.Key
	}
	for _, name := range []string{"KREPLAY_BROKERS", "KREPLAY_DATABASE_URL", "KREPLAY_CONTROL_SECRET"} {
		require.Contains(t, env, name)
	}

	// Probes on the port the Service exposes.
	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.ReadinessProbe.HTTPGet, "readinessProbe: want httpGet")
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.NotNil(t, c.LivenessProbe)
	require.NotNil(t, c.LivenessProbe.HTTPGet, "livenessProbe: want httpGet")
	require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	readyPort := containerPort(t, c, c.ReadinessProbe.HTTPGet.Port)
	require.Equal(t, readyPort, containerPort(t, c, c.LivenessProbe.HTTPGet.Port))

	require.Equal(t, "ClusterIP", svc.Spec.Type)
	require.Len(t, svc.Spec.Ports, 1)
	sp := svc.Spec.Ports[0]
	require.Equal(t, "metrics", sp.Name)
	require.Equal(t, 9464, sp.Port)
	require.Equal(t, readyPort, containerPort(t, c, sp.TargetPort), "the Service must expose the port the probes check")
	require.NotEmpty(t, svc.Spec.ServicePick)
	for k, v := range svc.Spec.ServicePick {
		require.Equal(t, v, dep.Spec.Template.Metadata.Labels[k], "the Service's selector must match the pods")
	}
	ann := dep.Spec.Template.Metadata.Annotations
	require.Equal(t, "true", ann["prometheus.io/scrape"])
	require.Equal(t, strconv.Itoa(readyPort), ann["prometheus.io/port"])
	require.Equal(t, "/metrics", ann["prometheus.io/path"])

	// Resources and security.
	require.Equal(t, "512Mi", c.Resources.Limits["memory"])
	require.NotEmpty(t, c.Resources.Requests["memory"])
	require.NotEmpty(t, c.Resources.Requests["cpu"])
	nonRoot := pod.SecurityContext.RunAsNonRoot
	if c.SecurityContext.RunAsNonRoot != nil {
		nonRoot = c.SecurityContext.RunAsNonRoot
	}
	require.NotNil(t, nonRoot)
	require.True(t, *nonRoot, "runAsNonRoot")
	require.True(t, c.SecurityContext.ReadOnlyRootFilesystem, "readOnlyRootFilesystem")

	// The example Secret is clearly an example.
	require.Contains(t, secret.file, "example")
	require.Empty(t, secret.Data, "the example Secret uses stringData placeholders")
	for k, v := range secret.StringData {
		if k == "KREPLAY_BROKERS" {
			continue
		}
		require.Contains(t, v, "CHANGE-ME", "the example Secret's %s must be an obvious placeholder", k)
	}
	// Applied as is, the example must not turn on signing with a placeholder everyone knows.
	require.NotContains(t, secret.StringData, "KREPLAY_CONTROL_SECRET")

	// The ConfigMap's kreplay.yaml is a valid serve config with the Secret's settings, the
	// same sources and projections as deploy/kreplay.yaml, and HTTP on the container port.
	data, ok := cm.Data["kreplay.yaml"]
	require.True(t, ok, "the ConfigMap has no kreplay.yaml")
	cfg, err := topology.Parse([]byte(data))
	require.NoError(t, err, "the ConfigMap's kreplay.yaml")
	cfg.ApplyEnv(func(name string) string { return secret.StringData[env[name]] })
	cfg.SetDefaults()
	require.NoError(t, cfg.Validate(), "the ConfigMap's kreplay.yaml")
	require.Equal(t, strings.Split(secret.StringData["KREPLAY_BROKERS"], ","), cfg.Kafka.Brokers)
	_, httpPort, err := net.SplitHostPort(cfg.HTTP.Listen)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(readyPort), httpPort, "http.listen must be the container port")

	sample := loadSampleConfig(t, nil)
	require.Equal(t, sample.Sources, cfg.Sources, "the ConfigMap and deploy/kreplay.yaml must declare the same sources")
	require.Equal(t, sample.Projections, cfg.Projections, "the ConfigMap and deploy/kreplay.yaml must declare the same projections")
}
