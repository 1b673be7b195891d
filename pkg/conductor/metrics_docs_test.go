package conductor_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/conductor-run/conductor/internal/metrics"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// metricName matches the names of conductor's metrics and of the Go and
// process collectors' in a PromQL expression or a page.
var metricName = regexp.MustCompile(`\b(?:conductor|go|process)_[a-z_]*[a-z]\b`)

// TestMetrics_DocsAndRules keeps docs/grafana/conductor.json,
// docs/prometheus/alerts.yml and docs/metrics.md true to a real scrape
// of conductord's metrics (a conductor whose host has run jobs): the
// files parse, every metric their expressions name is in the scrape (a
// histogram's or summary's _bucket, _sum and _count by their family),
// and every conductor_ family of the scrape is in docs/metrics.md.
func TestMetrics_DocsAndRules(t *testing.T) {
	t.Parallel()
	var c *conductor.Conductor
	c, bundle := setup(t, conductor.Config{Metrics: metrics.Handler(metrics.ConductorSource(&c, true))})
	srv := serve(t, c)
	startAgent(t, bundle, "squares")
	_, err := c.Client().SubmitAndWait(context.Background(), "squares", 3)
	require.NoError(t, err)
	mfs := waitScrape(t, srv, "the run histogram of squares", func(mfs map[string]*dto.MetricFamily) bool {
		return len(mfs["conductor_job_run_seconds"].GetMetric()) > 0
	})
	known := func(name string) bool {
		if mfs[name] != nil {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base, ok := strings.CutSuffix(name, suffix)
			if !ok || mfs[base] == nil {
				continue
			}
			switch mfs[base].GetType() {
			case dto.MetricType_HISTOGRAM:
				return true
			case dto.MetricType_SUMMARY:
				return suffix != "_bucket"
			}
		}
		return false
	}
	checkExpr := func(t *testing.T, where, expr string) {
		t.Helper()
		require.NotEmpty(t, strings.TrimSpace(expr), "%s: an empty expression", where)
		require.Equal(t, strings.Count(expr, "("), strings.Count(expr, ")"), "%s: parentheses of %q", where, expr)
		require.Equal(t, strings.Count(expr, "{"), strings.Count(expr, "}"), "%s: braces of %q", where, expr)
		for _, name := range metricName.FindAllString(expr, -1) {
			require.True(t, known(name), "%s: %s, in %q, is not in a scrape of conductord", where, name, expr)
		}
	}

	t.Run("Grafana", func(t *testing.T) {
		raw, err := os.ReadFile("../../docs/grafana/conductor.json")
		require.NoError(t, err)
		var dash struct {
			Title, UID string
			Panels     []map[string]any `json:"panels"`
			Templating struct {
				List []map[string]any `json:"list"`
			} `json:"templating"`
		}
		require.NoError(t, json.Unmarshal(raw, &dash))
		require.NotEmpty(t, dash.Title)
		exprs := 0
		var walk func(where string, v any)
		walk = func(where string, v any) {
			switch v := v.(type) {
			case map[string]any:
				for k, x := range v {
					if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") && strings.Contains(s, "_") {
						checkExpr(t, where, s)
						exprs++
						continue
					}
					walk(where, x)
				}
			case []any:
				for _, x := range v {
					walk(where, x)
				}
			}
		}
		for _, p := range dash.Panels {
			walk("panel "+p["title"].(string), p)
		}
		for _, v := range dash.Templating.List {
			walk("variable "+v["name"].(string), v)
		}
		require.Greater(t, exprs, 20, "the dashboard's expressions")
	})

	t.Run("Alerts", func(t *testing.T) {
		raw, err := os.ReadFile("../../docs/prometheus/alerts.yml")
		require.NoError(t, err)
		var rules struct {
			Groups []struct {
				Name  string `yaml:"name"`
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Expr        string            `yaml:"expr"`
					For         string            `yaml:"for"`
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		dec := yaml.NewDecoder(strings.NewReader(string(raw)))
		dec.KnownFields(true)
		require.NoError(t, dec.Decode(&rules))
		require.Len(t, rules.Groups, 1)
		var names []string
		for _, r := range rules.Groups[0].Rules {
			require.NotEmpty(t, r.Alert)
			require.NotContains(t, names, r.Alert, "alert names are unique")
			names = append(names, r.Alert)
			checkExpr(t, r.Alert, r.Expr)
			if r.For != "" {
				_, err := model.ParseDuration(r.For)
				require.NoError(t, err, "%s: for", r.Alert)
			}
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
		}
		for _, want := range []string{"ConductorQueueStalled", "ConductorQueueOldJobs", "ConductorDeadJobsRising", "ConductorPoolFailed",
			"ConductorHostsDropped", "ConductorNoHosts", "ConductorStorageUnhealthy"} {
			require.Contains(t, names, want)
		}
		doc, err := os.ReadFile("../../docs/metrics.md")
		require.NoError(t, err)
		for _, n := range names {
			require.Contains(t, string(doc), "`"+n+"`", "docs/metrics.md's table of alerts")
		}
	})

	t.Run("MetricsPage", func(t *testing.T) {
		raw, err := os.ReadFile("../../docs/metrics.md")
		require.NoError(t, err)
		doc := string(raw)
		var families []string
		for name := range mfs {
			if strings.HasPrefix(name, "conductor_") {
				families = append(families, name)
				require.Contains(t, doc, "`"+name+"`", "docs/metrics.md does not describe %s", name)
			}
		}
		slices.Sort(families)
		t.Logf("%d conductor_ families in the scrape: %v", len(families), families)
		// A name the page gives is one conductord has: in this scrape, or
		// one it serves only with what this test lacks.
		absent := []string{"conductor_lookup_seconds", "conductor_worker_counter"} // no lookup asked, no counter counted
		for _, name := range metricName.FindAllString(doc, -1) {
			if !strings.HasPrefix(name, "conductor_") || slices.Contains(absent, name) {
				continue
			}
			require.True(t, known(name), "docs/metrics.md names %s, which is not in a scrape", name)
		}
	})
}
