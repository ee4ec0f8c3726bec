package deploy

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/kreplay/kreplay/topology"
)

// docker-compose.yml is parsed into the subset of the Compose specification it uses; both the
// short and the long syntax of environment, volumes, ports and depends_on are accepted.

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image           string        `yaml:"image"`
	Build           *composeBuild `yaml:"build"`
	Environment     envMap        `yaml:"environment"`
	Volumes         []mount       `yaml:"volumes"`
	Ports           []port        `yaml:"ports"`
	DependsOn       dependsOn     `yaml:"depends_on"`
	Entrypoint      stringList    `yaml:"entrypoint"`
	Command         stringList    `yaml:"command"`
	Healthcheck     *healthcheck  `yaml:"healthcheck"`
	Restart         string        `yaml:"restart"`
	StopGracePeriod string        `yaml:"stop_grace_period"`
}

type healthcheck struct {
	Test stringList `yaml:"test"`
}

// composeBuild is build: as a context path or as a mapping.
type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

func (b *composeBuild) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain composeBuild
	return n.Decode((*plain)(b))
}

// stringList is a string or a list of strings (command:, entrypoint:, healthcheck test:).
type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = stringList{n.Value}
		return nil
	}
	var l []string
	err := n.Decode(&l)
	*s = l
	return err
}

// envMap is environment: as a mapping or as a list of NAME=value.
type envMap map[string]string

func (e *envMap) UnmarshalYAML(n *yaml.Node) error {
	*e = envMap{}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			(*e)[n.Content[i].Value] = n.Content[i+1].Value
		}
	case yaml.SequenceNode:
		for _, item := range n.Content {
			k, v, _ := strings.Cut(item.Value, "=")
			(*e)[k] = v
		}
	default:
		return fmt.Errorf("line %d: environment: want a mapping or a list", n.Line)
	}
	return nil
}

// dependsOn is depends_on: a list of services (condition service_started) or a mapping of
// service to condition.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = dependsOn{}
	switch n.Kind {
	case yaml.SequenceNode:
		for _, item := range n.Content {
			(*d)[item.Value] = "service_started"
		}
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			cond := v.Condition
			if cond == "" {
				cond = "service_started"
			}
			(*d)[k] = cond
		}
	default:
		return fmt.Errorf("line %d: depends_on: want a list or a mapping", n.Line)
	}
	return nil
}

// mount is an entry of volumes: (short "source:target[:mode]" or long syntax).
type mount struct {
	Source, Target string
	Bind           bool // Source is a host path; otherwise a named volume
}

func (m *mount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		var l struct {
			Type   string `yaml:"type"`
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		}
		if err := n.Decode(&l); err != nil {
			return err
		}
		*m = mount{Source: l.Source, Target: l.Target, Bind: l.Type == "bind"}
		return nil
	}
	parts := strings.Split(n.Value, ":")
	if len(parts) < 2 {
		return fmt.Errorf("line %d: volume %q: want source:target", n.Line, n.Value)
	}
	src := parts[0]
	*m = mount{Source: src, Target: parts[1], Bind: strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") || strings.HasPrefix(src, "~")}
	return nil
}

// port is an entry of ports: ("[ip:]host:container" or long syntax); Host is "" when the port
// is not published.
type port struct {
	Host, Container string
}

func (p *port) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		var l struct {
			Target    string `yaml:"target"`
			Published string `yaml:"published"`
		}
		if err := n.Decode(&l); err != nil {
			return err
		}
		*p = port{Host: l.Published, Container: l.Target}
		return nil
	}
	v, _, _ := strings.Cut(n.Value, "/") // 9092/tcp
	parts := strings.Split(v, ":")
	switch len(parts) {
	case 1:
		*p = port{Container: parts[0]}
	case 2:
		*p = port{Host: parts[0], Container: parts[1]}
	case 3:
		*p = port{Host: parts[1], Container: parts[2]}
	default:
		return fmt.Errorf("line %d: port %q", n.Line, n.Value)
	}
	return nil
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	readYAML(t, "docker-compose.yml", &c)
	return c
}

// service returns a service that must exist.
func (c composeFile) service(t *testing.T, name string) composeService {
	t.Helper()
	s, ok := c.Services[name]
	require.True(t, ok, "docker-compose.yml has no service %q (services: %v)", name, slices.Sorted(maps.Keys(c.Services)))
	return s
}

// mountOf returns the mount of a service with the given container path.
func (s composeService) mountOf(t *testing.T, target string) mount {
	t.Helper()
	for _, m := range s.Volumes {
		if m.Target == target {
			return m
		}
	}
	t.Fatalf("no volume mounted at %s (volumes: %+v)", target, s.Volumes)
	return mount{}
}

// mountFrom returns the container path where a service mounts a host path of the repository.
func (s composeService) mountFrom(t *testing.T, source string) string {
	t.Helper()
	for _, m := range s.Volumes {
		if m.Bind && filepath.Clean(m.Source) == filepath.Clean(source) {
			return m.Target
		}
	}
	t.Fatalf("%s is not mounted (volumes: %+v)", source, s.Volumes)
	return ""
}

// loadSampleConfig parses deploy/kreplay.yaml as kreplay serve would in the compose stack: the
// file, then kreplay's environment from docker-compose.yml, then the defaults.
func loadSampleConfig(t *testing.T, getenv func(string) string) *topology.Config {
	t.Helper()
	cfg, err := topology.Parse(readFile(t, "deploy/kreplay.yaml"))
	require.NoError(t, err, "deploy/kreplay.yaml")
	cfg.ApplyEnv(func(k string) string {
		if getenv == nil {
			return ""
		}
		return getenv(k)
	})
	cfg.SetDefaults()
	require.NoError(t, cfg.Validate(), "deploy/kreplay.yaml")
	return cfg
}

func TestComposeDefinesTheStack(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(readFile(t, "docker-compose.yml"), &doc))
	for _, v := range yamlScalars(&doc) {
		require.NotContains(t, strings.ToLower(v), "zookeeper", "Kafka runs in KRaft mode: nothing may refer to ZooKeeper")
	}

	// Kafka: the official image in KRaft mode, one node that is broker and controller.
	kafka := c.service(t, "kafka")
	require.True(t, strings.HasPrefix(kafka.Image, "apache/kafka:"), "kafka image %q: want the official apache/kafka", kafka.Image)
	env := kafka.Environment
	roles := strings.Split(env["KAFKA_PROCESS_ROLES"], ",")
	require.Contains(t, roles, "controller", "KAFKA_PROCESS_ROLES")
	require.Contains(t, roles, "broker", "KAFKA_PROCESS_ROLES")
	require.NotEmpty(t, env["KAFKA_NODE_ID"])
	listeners := listenerPorts(t, env["KAFKA_LISTENERS"])
	require.Equal(t, "9092", listeners["PLAINTEXT"], "KAFKA_LISTENERS")
	require.Equal(t, "9093", listeners["CONTROLLER"], "KAFKA_LISTENERS")
	require.Equal(t, "29092", listeners["EXTERNAL"], "KAFKA_LISTENERS")
	require.Contains(t, env["KAFKA_ADVERTISED_LISTENERS"], "EXTERNAL://localhost:29092", "the host CLI connects to localhost:29092")
	require.Contains(t, env["KAFKA_ADVERTISED_LISTENERS"], "PLAINTEXT://kafka:9092")
	require.Equal(t, "CONTROLLER", env["KAFKA_CONTROLLER_LISTENER_NAMES"])
	require.Equal(t, env["KAFKA_NODE_ID"]+"@kafka:9093", env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
	for _, k := range []string{"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"} {
		require.Equal(t, "1", env[k], "%s: a single node cannot hold more replicas", k)
	}
	require.Equal(t, "false", env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"])
	require.Contains(t, publishedPorts(kafka), "29092")
	require.NotNil(t, kafka.Healthcheck, "kafka needs a healthcheck: the others wait for service_healthy")
	require.Contains(t, strings.Join(kafka.Healthcheck.Test, " "), "/opt/kafka/bin/kafka-broker-api-versions.sh")

	// kafka-init creates every event topic of the sample config, with its partition count.
	initSvc := c.service(t, "kafka-init")
	require.Equal(t, kafka.Image, initSvc.Image, "kafka-init uses the Kafka image for its CLI")
	require.Equal(t, "service_healthy", initSvc.DependsOn["kafka"])
	args := append(append([]string{}, initSvc.Entrypoint...), initSvc.Command...)
	require.Contains(t, strings.Join(args, " "), "/opt/kafka/bin/kafka-topics.sh")
	require.Contains(t, args, "--create")
	require.Equal(t, "kafka:9092", flagValue(args, "--bootstrap-server"))
	cfg := loadSampleConfig(t, nil)
	require.Len(t, cfg.Sources, 1, "kafka-init creates one topic; create each source topic when there are more")
	require.Equal(t, cfg.Sources[0].Topic, flagValue(args, "--topic"), "kafka-init must create the source topic of deploy/kreplay.yaml")
	require.Equal(t, strconv.Itoa(int(cfg.Sources[0].Partitions)), flagValue(args, "--partitions"))

	// PostgreSQL with a healthcheck and a named volume.
	pg := c.service(t, "postgres")
	require.True(t, strings.HasPrefix(pg.Image, "postgres:15"), "postgres image %q", pg.Image)
	require.NotNil(t, pg.Healthcheck)
	require.Contains(t, strings.Join(pg.Healthcheck.Test, " "), "pg_isready")
	data := pg.mountOf(t, "/var/lib/postgresql/data")
	require.False(t, data.Bind, "PostgreSQL's data is a named volume")
	require.Contains(t, c.Volumes, data.Source, "volume %q is not declared under volumes:", data.Source)

	// kreplay: built from deploy/Dockerfile, configured through the environment.
	kr := c.service(t, "kreplay")
	require.NotNil(t, kr.Build, "kreplay is built from the repository")
	require.Equal(t, ".", kr.Build.Context)
	require.Equal(t, "deploy/Dockerfile", kr.Build.Dockerfile)
	_, err := os.Stat(filepath.Join(repoRoot(t), kr.Build.Context, kr.Build.Dockerfile))
	require.NoError(t, err)

	brokers := strings.Split(kr.Environment["KREPLAY_BROKERS"], ",")
	for _, b := range brokers {
		host, p, err := net.SplitHostPort(b)
		require.NoError(t, err, "KREPLAY_BROKERS %q", b)
		require.Equal(t, "kafka", host, "KREPLAY_BROKERS must point at the kafka service")
		require.Equal(t, listeners["PLAINTEXT"], p, "KREPLAY_BROKERS must use Kafka's in-network listener")
	}
	dbURL, err := url.Parse(kr.Environment["KREPLAY_DATABASE_URL"])
	require.NoError(t, err)
	require.Equal(t, "postgres", dbURL.Hostname(), "KREPLAY_DATABASE_URL must point at the postgres service")
	pw, _ := dbURL.User.Password()
	require.Equal(t, pg.Environment["POSTGRES_PASSWORD"], pw, "KREPLAY_DATABASE_URL's password")
	require.Equal(t, "disable", dbURL.Query().Get("sslmode"))

	require.Equal(t, "service_healthy", kr.DependsOn["kafka"])
	require.Equal(t, "service_healthy", kr.DependsOn["postgres"])
	require.Equal(t, "service_completed_successfully", kr.DependsOn["kafka-init"])
	require.Equal(t, "unless-stopped", kr.Restart)
	grace, err := time.ParseDuration(kr.StopGracePeriod)
	require.NoError(t, err, "stop_grace_period")
	require.GreaterOrEqual(t, grace, 30*time.Second, "kreplay needs time to finish the batch in flight on SIGTERM")

	// The config is mounted where the image's default command reads it.
	_, cmd := dockerfileEntrypoint(t)
	configPath := flagValue(cmd, "--config")
	require.Equal(t, "./deploy/kreplay.yaml", kr.mountOf(t, configPath).Source)
	krCfg := loadSampleConfig(t, func(k string) string { return kr.Environment[k] })
	require.Equal(t, brokers, krCfg.Kafka.Brokers)
	_, httpPort, err := net.SplitHostPort(krCfg.HTTP.Listen)
	require.NoError(t, err)
	require.Contains(t, publishedPorts(kr), httpPort, "kreplay's http.listen port is published")
	require.Equal(t, "9464", httpPort)

	// kminion exports the lag of kreplay's consumer groups.
	km := c.service(t, "kminion")
	require.True(t, strings.HasPrefix(km.Image, "redpandadata/kminion:"), "kminion image %q", km.Image)
	require.Equal(t, "kafka:9092", km.Environment["KAFKA_BROKERS"])
	kmCfgPath := km.Environment["CONFIG_FILEPATH"]
	require.NotEmpty(t, kmCfgPath)
	kmc := loadKminionConfig(t, km.mountOf(t, kmCfgPath).Source)
	for group, want := range map[string]bool{
		"kreplay.balances.balances_v1": true, "kreplay.balances.balances_v2": true,
		"kreplay-cli": false, "connect-cluster": false, "kreplayXbalances": false,
	} {
		require.Equal(t, want, kmc.allowsGroup(t, group), "kminion allowedGroups for %q", group)
	}

	prom := c.service(t, "prometheus")
	require.True(t, strings.HasPrefix(prom.Image, "prom/prometheus"), "prometheus image %q", prom.Image)
	require.Equal(t, "./deploy/prometheus/prometheus.yml", prom.mountOf(t, "/etc/prometheus/prometheus.yml").Source)

	graf := c.service(t, "grafana")
	require.True(t, strings.HasPrefix(graf.Image, "grafana/grafana"), "grafana image %q", graf.Image)
	require.Equal(t, "true", graf.Environment["GF_AUTH_ANONYMOUS_ENABLED"])
	require.Equal(t, "Admin", graf.Environment["GF_AUTH_ANONYMOUS_ORG_ROLE"])
	require.Contains(t, publishedPorts(graf), "3000")
}

// Every host path mounted into a container exists, every dependency is a service, every
// service_healthy dependency has a healthcheck, and no host port is published twice.
func TestComposeIsConsistent(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	root := repoRoot(t)
	hostPorts := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		require.True(t, s.Image != "" || s.Build != nil, "service %s has neither image nor build", name)
		for _, m := range s.Volumes {
			if !m.Bind {
				require.Contains(t, c.Volumes, m.Source, "service %s: named volume %q is not declared under volumes:", name, m.Source)
				continue
			}
			require.False(t, filepath.IsAbs(m.Source), "service %s: mount %s: use a path relative to the repository", name, m.Source)
			_, err := os.Stat(filepath.Join(root, m.Source))
			require.NoError(t, err, "service %s mounts %s, which does not exist in the repository", name, m.Source)
		}
		for dep, cond := range s.DependsOn {
			d, ok := c.Services[dep]
			require.True(t, ok, "service %s depends on %q, which is not a service", name, dep)
			require.Contains(t, []string{"service_started", "service_healthy", "service_completed_successfully"}, cond, "service %s: depends_on %s", name, dep)
			if cond == "service_healthy" {
				require.NotNil(t, d.Healthcheck, "service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, p := range s.Ports {
			if p.Host == "" {
				continue
			}
			prev, dup := hostPorts[p.Host]
			require.False(t, dup, "host port %s is published by both %s and %s", p.Host, prev, name)
			hostPorts[p.Host] = name
		}
	}
}

// yamlScalars returns every key and value of a YAML document (comments excluded).
func yamlScalars(n *yaml.Node) []string {
	if n.Kind == yaml.ScalarNode {
		return []string{n.Value}
	}
	var out []string
	for _, c := range n.Content {
		out = append(out, yamlScalars(c)...)
	}
	return out
}

func publishedPorts(s composeService) []string {
	var out []string
	for _, p := range s.Ports {
		if p.Host != "" {
			out = append(out, p.Host)
		}
	}
	return out
}

// listenerPorts parses KAFKA_LISTENERS (NAME://host:port,...) into name -> port.
func listenerPorts(t *testing.T, listeners string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for l := range strings.SplitSeq(listeners, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(l), "://")
		require.True(t, ok, "listener %q", l)
		_, p, err := net.SplitHostPort(addr)
		require.NoError(t, err, "listener %q", l)
		out[name] = p
	}
	return out
}

// flagValue returns the value after flag in args ("" when absent).
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// kminionConfig is the part of kminion's config file that matters here.
type kminionConfig struct {
	Minion struct {
		ConsumerGroups struct {
			Enabled       bool     `yaml:"enabled"`
			ScrapeMode    string   `yaml:"scrapeMode"`
			Granularity   string   `yaml:"granularity"`
			AllowedGroups []string `yaml:"allowedGroups"`
			IgnoredGroups []string `yaml:"ignoredGroups"`
		} `yaml:"consumerGroups"`
	} `yaml:"minion"`
	Exporter struct {
		Namespace string `yaml:"namespace"`
		Port      int    `yaml:"port"`
	} `yaml:"exporter"`
}

func loadKminionConfig(t *testing.T, rel string) kminionConfig {
	t.Helper()
	var k kminionConfig
	readYAML(t, rel, &k)
	cg := k.Minion.ConsumerGroups
	require.True(t, cg.Enabled, "kminion: consumer groups must be scraped")
	require.Contains(t, []string{"adminApi", "offsetsTopic"}, cg.ScrapeMode)
	require.Contains(t, []string{"partition", "topic"}, cg.Granularity)
	require.Equal(t, "kminion", k.Exporter.Namespace, "the dashboard's kminion_* names assume the default namespace")
	return k
}

// allowsGroup applies kminion's group filter: "/regex/" is a regular expression, anything else
// is anchored (minion/utils.go compileRegex).
func (k kminionConfig) allowsGroup(t *testing.T, group string) bool {
	t.Helper()
	compile := func(expr string) *regexp.Regexp {
		if len(expr) >= 2 && strings.HasPrefix(expr, "/") && strings.HasSuffix(expr, "/") {
			return regexp.MustCompile(expr[1 : len(expr)-1])
		}
		return regexp.MustCompile("^" + expr + "$")
	}
	cg := k.Minion.ConsumerGroups
	allowed := false
	for _, e := range cg.AllowedGroups {
		allowed = allowed || compile(e).MatchString(group)
	}
	for _, e := range cg.IgnoredGroups {
		allowed = allowed && !compile(e).MatchString(group)
	}
	return allowed
}
