package k8s_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// checkMonitoring: every ServiceMonitor selects a Service of the build on a port that Service
// names, and the PrometheusRule carries exactly the alert table of docs/operations.md, using
// only linkhop metrics the docs' metric table lists.
func checkMonitoring(t *testing.T, b *bundle) {
	for _, m := range b.monitors {
		sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
		if err != nil {
			t.Errorf("ServiceMonitor %s: %v", m.Name, err)
			continue
		}
		var matched []*corev1.Service
		for _, s := range b.services {
			if sel.Matches(labels.Set(s.Labels)) {
				matched = append(matched, s)
			}
		}
		if len(matched) == 0 {
			t.Errorf("ServiceMonitor %s selects no Service of the build", m.Name)
		}
		for _, ep := range m.Spec.Endpoints {
			for _, s := range matched {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s scrapes port %q, which Service %s does not name", m.Name, ep.Port, s.Name)
				}
			}
			if ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor %s scrapes %q, not /metrics", m.Name, ep.Path)
			}
		}
	}
	if len(b.rules) == 0 {
		return
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	alerts, metrics := docTables(string(doc))
	var rows []string
	for _, r := range b.rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				rows = append(rows, rule.Labels["row"])
				for _, name := range regexp.MustCompile(`\blinkhop_[a-z_]+`).FindAllString(rule.Expr.String(), -1) {
					base := strings.TrimSuffix(name, "_bucket")
					if !slices.Contains(metrics, base) {
						t.Errorf("alert %s uses %s, which docs/operations.md#metrics does not list", rule.Alert, name)
					}
				}
			}
		}
	}
	slices.Sort(rows)
	slices.Sort(alerts)
	if !slices.Equal(rows, alerts) {
		t.Errorf("PrometheusRule rows %q, want the docs' alert table %q", rows, alerts)
	}
}

// docTables reads the first column of the alert table and the metric names of the metric
// table of docs/operations.md.
func docTables(doc string) (alerts, metrics []string) {
	section := ""
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "## ") {
			section = strings.TrimPrefix(line, "## ")
			continue
		}
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "|---") {
			continue
		}
		first := strings.TrimSpace(strings.Split(strings.TrimPrefix(line, "|"), "|")[0])
		switch section {
		case "Alerts worth setting":
			if first != "alert" {
				alerts = append(alerts, first)
			}
		case "Metrics":
			metrics = append(metrics, regexp.MustCompile("`(linkhop_[a-z_]+)`").FindAllString(first, -1)...)
		}
	}
	for i, m := range metrics {
		metrics[i] = strings.Trim(m, "`")
	}
	return alerts, metrics
}

// checkIngress: an Ingress routes only the public API to linkhop-api, so /metrics, the health
// endpoints and /admin stay off the public path.
func checkIngress(t *testing.T, b *bundle) {
	for _, ing := range b.ingresses {
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				t.Errorf("Ingress %s: a rule without paths routes everything", ing.Name)
				continue
			}
			for _, p := range rule.HTTP.Paths {
				public := (p.Path == "/v1/" && p.PathType != nil && *p.PathType == "Prefix") ||
					(p.Path == "/openapi.json" && p.PathType != nil && *p.PathType == "Exact")
				if !public {
					t.Errorf("Ingress %s publishes %q (%v): only /v1/ (Prefix) and /openapi.json (Exact) are public", ing.Name, p.Path, p.PathType)
				}
				if p.Backend.Service == nil || p.Backend.Service.Name != "linkhop-api" {
					t.Errorf("Ingress %s: path %s goes to %+v, not linkhop-api", ing.Name, p.Path, p.Backend)
				}
			}
		}
		if ing.Spec.DefaultBackend != nil {
			t.Errorf("Ingress %s has a default backend: every other path would be public", ing.Name)
		}
	}
}
