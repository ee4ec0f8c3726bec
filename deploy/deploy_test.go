// Package deploy holds no Go code: only the tests that check the deployment files (the
// Dockerfile, docker-compose.yml, the Prometheus and Grafana provisioning, the dashboard and the
// Kubernetes manifests) against each other and against kreplay itself. There is no Docker engine
// in CI, so every file is parsed, never run; the dashboard is checked against a real kreplay.
package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) {
	// The dashboard test runs a whole processor in-process: it must leave nothing behind.
	goleak.VerifyTestMain(m)
}

// repoRoot is the repository root: tests run in deploy/.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	require.NoError(t, err)
	root := filepath.Dir(wd)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repository root (with go.mod) should be the parent of deploy/")
	return root
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	require.NoError(t, err)
	return b
}

func readYAML(t *testing.T, rel string, v any) {
	t.Helper()
	require.NoError(t, yaml.Unmarshal(readFile(t, rel), v), "parse %s", rel)
}

// ---------------------------------------------------------------------------------------------
// deploy/Dockerfile

type dockerInstruction struct {
	Cmd, Args string
}

func dockerfile(t *testing.T) []dockerInstruction {
	t.Helper()
	var out []dockerInstruction
	sc := bufio.NewScanner(strings.NewReader(string(readFile(t, "deploy/Dockerfile"))))
	cont := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cont == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cont += l + " "
			continue
		}
		line, cont = cont+line, ""
		cmd, args, _ := strings.Cut(line, " ")
		out = append(out, dockerInstruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)})
	}
	require.NoError(t, sc.Err())
	return out
}

// dockerfileEntrypoint returns the image's ENTRYPOINT and CMD (JSON form).
func dockerfileEntrypoint(t *testing.T) (entrypoint, cmd []string) {
	t.Helper()
	for _, in := range dockerfile(t) {
		switch in.Cmd {
		case "ENTRYPOINT":
			require.NoError(t, json.Unmarshal([]byte(in.Args), &entrypoint), "ENTRYPOINT must be in JSON (exec) form")
		case "CMD":
			require.NoError(t, json.Unmarshal([]byte(in.Args), &cmd), "CMD must be in JSON (exec) form")
		}
	}
	return entrypoint, cmd
}

func TestDockerfileBuildsAStaticNonRootImage(t *testing.T) {
	t.Parallel()
	ins := dockerfile(t)
	var stages [][]dockerInstruction
	for _, in := range ins {
		if in.Cmd == "FROM" {
			stages = append(stages, nil)
		}
		require.NotEmpty(t, stages, "the Dockerfile must start with FROM (got %s)", in.Cmd)
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	require.Len(t, stages, 2, "a build stage and a runtime stage")

	build, runtime := stages[0], stages[1]
	from := strings.Fields(build[0].Args)
	require.Len(t, from, 3, "FROM golang:1.26 AS <name>")
	require.Equal(t, "golang:1.26", from[0])
	require.True(t, strings.EqualFold(from[1], "AS"))
	builder := from[2]
	download, copyAll, compile := -1, -1, -1
	for i, in := range build {
		switch {
		case in.Cmd == "RUN" && strings.Contains(in.Args, "go mod download"):
			download = i
		case in.Cmd == "COPY" && strings.HasPrefix(in.Args, ". "):
			copyAll = i
		case in.Cmd == "RUN" && strings.Contains(in.Args, "go build"):
			compile = i
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "-o /kreplay", "./cmd/kreplay"} {
				require.Contains(t, in.Args, want, "the go build command")
			}
		}
	}
	require.True(t, download >= 0 && copyAll > download && compile > copyAll,
		"the module download must be its own layer, before the sources are copied and built")
	_, err := os.Stat(filepath.Join(repoRoot(t), "cmd", "kreplay", "main.go"))
	require.NoError(t, err)

	require.Equal(t, "gcr.io/distroless/static-debian12:nonroot", runtime[0].Args)
	var user, expose string
	copied := false
	for _, in := range runtime[1:] {
		switch in.Cmd {
		case "USER":
			user = in.Args
		case "EXPOSE":
			expose = in.Args
		case "COPY":
			copied = copied || in.Args == "--from="+builder+" /kreplay /kreplay"
		}
	}
	require.True(t, copied, "the runtime stage copies /kreplay from the %s stage", builder)
	require.Equal(t, "nonroot", user)
	require.Equal(t, "9464", expose)
	entrypoint, cmd := dockerfileEntrypoint(t)
	require.Equal(t, []string{"/kreplay"}, entrypoint)
	require.Equal(t, []string{"serve", "--config", "/etc/kreplay/kreplay.yaml"}, cmd)
}

// ---------------------------------------------------------------------------------------------
// Prometheus

type prometheusConfig struct {
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func TestPrometheusScrapesKreplayAndKminion(t *testing.T) {
	t.Parallel()
	var p prometheusConfig
	readYAML(t, "deploy/prometheus/prometheus.yml", &p)
	c := loadCompose(t)
	jobOf := map[string]string{} // target -> job
	for _, sc := range p.ScrapeConfigs {
		require.NotEmpty(t, sc.JobName)
		require.Contains(t, []string{"", "/metrics"}, sc.MetricsPath, "job %s", sc.JobName)
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, err := net.SplitHostPort(target)
				require.NoError(t, err, "target %q", target)
				require.Contains(t, c.Services, host, "job %s scrapes %s, which is not a compose service", sc.JobName, target)
				jobOf[target] = sc.JobName
			}
		}
	}
	require.Contains(t, jobOf, "kreplay:9464", "a job must scrape kreplay")

	km := c.service(t, "kminion")
	kmc := loadKminionConfig(t, km.mountOf(t, km.Environment["CONFIG_FILEPATH"]).Source)
	kminionTarget := net.JoinHostPort("kminion", strconv.Itoa(kmc.Exporter.Port))
	require.Contains(t, jobOf, kminionTarget, "a job must scrape the lag exporter on its exporter.port")
	require.NotEqual(t, jobOf["kreplay:9464"], jobOf[kminionTarget], "kreplay and kminion are separate jobs")
}

// ---------------------------------------------------------------------------------------------
// Grafana

type grafanaDatasources struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name string `yaml:"name"`
		UID  string `yaml:"uid"`
		Type string `yaml:"type"`
		URL  string `yaml:"url"`
	} `yaml:"datasources"`
}

type grafanaProviders struct {
	APIVersion int `yaml:"apiVersion"`
	Providers  []struct {
		Name    string `yaml:"name"`
		Type    string `yaml:"type"`
		Options struct {
			Path string `yaml:"path"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// prometheusUID is the uid of the provisioned Prometheus data source.
func prometheusUID(t *testing.T) string {
	t.Helper()
	var ds grafanaDatasources
	readYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yml", &ds)
	require.Equal(t, 1, ds.APIVersion)
	require.Len(t, ds.Datasources, 1)
	d := ds.Datasources[0]
	require.Equal(t, "prometheus", d.Type)
	require.NotEmpty(t, d.UID, "the dashboard refers to the data source by uid")
	u, err := url.Parse(d.URL)
	require.NoError(t, err)
	require.Equal(t, "prometheus", u.Hostname(), "the data source is the compose service prometheus")
	require.Equal(t, "9090", u.Port())
	return d.UID
}

// dashboard is the part of a Grafana dashboard model the tests read; raw keeps everything.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Datasource *datasourceRef  `json:"datasource"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string         `json:"name"`
			Datasource *datasourceRef `json:"datasource"`
			Expr       string         `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Mappings []struct {
				Type    string `json:"type"`
				Options map[string]struct {
					Text string `json:"text"`
				} `json:"options"`
			} `json:"mappings"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []panel `json:"panels"` // the panels of a collapsed row
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw := readFile(t, "deploy/grafana/dashboards/kreplay.json")
	require.True(t, json.Valid(raw), "kreplay.json is not valid JSON")
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	require.NoError(t, dec.Decode(&d))
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF, "kreplay.json: trailing data after the dashboard")
	return d
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// queries are every PromQL expression of the dashboard, keyed by where they are: panel
// targets, annotations and the series selectors of query variables.
func (d dashboard) queries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out[fmt.Sprintf("annotation %q", a.Name)] = a.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := variableQuery(t, v.Query)
		require.Equal(t, v.Definition, q, "variable %s: definition and query differ", v.Name)
		if sel, ok := labelValuesSelector(q); ok {
			out[fmt.Sprintf("variable %s", v.Name)] = sel
			continue
		}
		t.Fatalf("variable %s: query %q: want label_values(<selector>, <label>)", v.Name, q)
	}
	return out
}

// variableQuery returns a query variable's query, a string or {"query": "..."}.
func variableQuery(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	require.NoError(t, json.Unmarshal(raw, &o))
	return o.Query
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// labelValuesSelector returns the series selector of label_values(selector, label).
func labelValuesSelector(q string) (string, bool) {
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return "", false
	}
	return m[1], true
}

func TestGrafanaProvisioningAndDashboardAgree(t *testing.T) {
	t.Parallel()
	uid := prometheusUID(t)
	c := loadCompose(t)
	graf := c.service(t, "grafana")
	require.Equal(t, "/etc/grafana/provisioning", graf.mountFrom(t, "./deploy/grafana/provisioning"))

	// The provider reads the directory where compose mounts deploy/grafana/dashboards.
	var prov grafanaProviders
	readYAML(t, "deploy/grafana/provisioning/dashboards/kreplay.yml", &prov)
	require.Equal(t, 1, prov.APIVersion)
	require.Len(t, prov.Providers, 1)
	require.Equal(t, "file", prov.Providers[0].Type)
	dashDir := graf.mountFrom(t, "./deploy/grafana/dashboards")
	require.Equal(t, dashDir, prov.Providers[0].Options.Path, "the dashboard provider must read where compose mounts deploy/grafana/dashboards")
	if home := graf.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		require.Equal(t, dashDir+"/kreplay.json", home)
	}

	d := loadDashboard(t)
	require.Equal(t, 39, d.SchemaVersion)
	require.NotEmpty(t, d.UID)
	require.NotEmpty(t, d.Title)
	ids := map[int]string{}
	targets := 0
	for _, p := range d.allPanels() {
		require.NotZero(t, p.ID, "panel %q has no id", p.Title)
		prev, dup := ids[p.ID]
		require.False(t, dup, "panel id %d is used by %q and %q", p.ID, prev, p.Title)
		ids[p.ID] = p.Title
		require.NotEmpty(t, p.Title, "panel %d has no title", p.ID)
		require.True(t, p.GridPos.W > 0 && p.GridPos.H > 0 && p.GridPos.X+p.GridPos.W <= 24, "panel %d %q: gridPos %+v", p.ID, p.Title, p.GridPos)
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, "panel %d %q has no query", p.ID, p.Title)
		if p.Datasource != nil {
			require.Equal(t, uid, p.Datasource.UID, "panel %d %q data source", p.ID, p.Title)
		}
		for _, tg := range p.Targets {
			targets++
			require.NotNil(t, tg.Datasource, "panel %d %q target %s has no data source", p.ID, p.Title, tg.RefID)
			require.Equal(t, datasourceRef{Type: "prometheus", UID: uid}, *tg.Datasource, "panel %d %q target %s", p.ID, p.Title, tg.RefID)
			require.NotEmpty(t, strings.TrimSpace(tg.Expr), "panel %d %q target %s has no expression", p.ID, p.Title, tg.RefID)
		}
	}
	require.GreaterOrEqual(t, targets, 15)
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			require.Equal(t, uid, a.Datasource.UID, "annotation %q", a.Name)
		}
	}

	vars := map[string]string{}
	for _, v := range d.Templating.List {
		require.NotNil(t, v.Datasource, "variable %s", v.Name)
		require.Equal(t, uid, v.Datasource.UID, "variable %s", v.Name)
		vars[v.Name] = variableQuery(t, v.Query)
	}
	require.Equal(t, "label_values(kreplay_replay_state, projection)", vars["projection"])
	require.Contains(t, vars, "version")
	sel, ok := labelValuesSelector(vars["version"])
	require.True(t, ok, "variable version: %q", vars["version"])
	require.Equal(t, []string{"kreplay_replay_state"}, parsePromQL(sel).Metrics())
	require.True(t, strings.HasSuffix(vars["version"], ", version)"), "variable version: %q", vars["version"])
}
