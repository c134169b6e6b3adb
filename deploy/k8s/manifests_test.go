package k8s_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizations are the directories an operator builds; base is built too because an
// overlay can only be as right as the base under it.
var kustomizations = []string{"base", "overlays/dev", "overlays/prod", "overlays/extras"}

// components are the optional kustomize components; overlays/extras builds them all.
var components = []string{"components/monitoring", "components/keda", "components/public-ingress"}

// secretExample stands in for the operator's Secret where an overlay does not bring one.
const secretExample = "base/secret.example.yaml"

// newScheme knows every kind the manifests may use. A kind outside it fails the test, so a
// new kind is added here on purpose, and decoded strictly like the rest.
func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme,
		policyv1.AddToScheme, networkingv1.AddToScheme,
		monitoringv1.AddToScheme, kedav1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// decodeStrict decodes one YAML document into the typed object of its apiVersion and kind;
// unknown and duplicate fields are errors (a misspelt field would otherwise be dropped by
// the API server without a word).
func decodeStrict(s *runtime.Scheme, doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("reading apiVersion and kind: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return nil, errors.New("document has no apiVersion or kind")
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	obj, err := s.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("%s is not a kind these manifests may use: %w", gvk, err)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", gvk.Kind, err)
	}
	return obj, nil
}

// withoutDeleteDirective drops a top-level "$patch: delete" (a patch that removes the object it
// names): what is left, the object's kind and name, is decoded strictly like any document.
func withoutDeleteDirective(t *testing.T, doc []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		return doc
	}
	v, ok := m["$patch"]
	if !ok {
		return doc
	}
	if v != "delete" {
		t.Errorf("$patch: %v; only delete patches are expected", v)
	}
	delete(m, "$patch")
	out, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// documents splits a YAML stream, dropping documents that hold only comments.
func documents(b []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if s := string(bytes.TrimSpace(j)); s == "null" || s == "" {
			continue
		}
		docs = append(docs, doc)
	}
}

// yamlFiles lists every YAML file in this module.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no YAML files found")
	}
	return files
}

// readComponent decodes a component's kustomization.yaml strictly.
func readComponent(path string) (*kusttypes.Kustomization, error) {
	return readKustomizeFile(path, kusttypes.ComponentVersion, kusttypes.ComponentKind)
}

// readKustomization decodes dir/kustomization.yaml strictly.
func readKustomization(path string) (*kusttypes.Kustomization, error) {
	return readKustomizeFile(path, kusttypes.KustomizationVersion, kusttypes.KustomizationKind)
}

// readKustomizeFile decodes a kustomization.yaml strictly and checks its apiVersion and kind.
func readKustomizeFile(path, version, kind string) (*kusttypes.Kustomization, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return nil, err
	}
	if k.APIVersion != version || k.Kind != kind {
		return nil, fmt.Errorf("apiVersion/kind is %s/%s, want %s/%s", k.APIVersion, k.Kind, version, kind)
	}
	return &k, nil
}

// TestManifestsDecodeStrictly decodes every YAML file on disk, patches included, into its
// Kubernetes (or kustomize) type with unknown fields refused, and finds files that no
// kustomization uses (a patch that silently stopped applying, a resource never deployed).
func TestManifestsDecodeStrictly(t *testing.T) {
	s := newScheme(t)
	used := map[string]bool{}
	for _, set := range []struct {
		dirs []string
		read func(string) (*kusttypes.Kustomization, error)
	}{{kustomizations, readKustomization}, {components, readComponent}} {
		for _, dir := range set.dirs {
			k, err := set.read(filepath.Join(dir, "kustomization.yaml"))
			if err != nil {
				t.Fatalf("%s/kustomization.yaml: %v", dir, err)
			}
			for _, r := range k.Resources {
				used[filepath.Join(dir, r)] = true
			}
			for _, p := range k.Patches {
				if p.Path == "" {
					t.Errorf("%s: inline patches are not decoded by this test; put the patch in a file", dir)
				}
				used[filepath.Join(dir, p.Path)] = true
			}
		}
	}
	for _, path := range yamlFiles(t) {
		t.Run(path, func(t *testing.T) {
			if filepath.Base(path) == "kustomization.yaml" && slices.Contains(components, filepath.Dir(path)) {
				return // read above
			}
			if filepath.Base(path) == "kustomization.yaml" {
				if _, err := readKustomization(path); err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(kustomizations, filepath.Dir(path)) {
					t.Errorf("kustomization %s is not built by this test: add it to kustomizations", path)
				}
				return
			}
			if !used[path] && !strings.HasSuffix(path, ".example.yaml") {
				t.Errorf("no kustomization uses %s", path)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			docs, err := documents(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) == 0 {
				t.Fatal("no documents")
			}
			for i, doc := range docs {
				if _, err := decodeStrict(s, withoutDeleteDirective(t, doc)); err != nil {
					t.Errorf("document %d: %v", i+1, err)
				}
			}
		})
	}
}

// bundle is the output of one kustomize build, typed.
type bundle struct {
	dir          string
	overlay      bool
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	pdbs         []*policyv1.PodDisruptionBudget
	policies     []*networkingv1.NetworkPolicy
	namespaces   []*corev1.Namespace
	accounts     map[string]*corev1.ServiceAccount
	monitors     []*monitoringv1.ServiceMonitor
	rules        []*monitoringv1.PrometheusRule
	scaled       []*kedav1alpha1.ScaledObject
	ingresses    []*networkingv1.Ingress
	objects      []metav1.Object
	example      *corev1.Secret
}

// build runs kustomize on dir the way `kubectl apply -k` does and decodes every resource
// of the output strictly.
func build(t *testing.T, s *runtime.Scheme, dir string) *bundle {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	b := &bundle{
		dir: dir, overlay: strings.HasPrefix(dir, "overlays/"),
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		accounts: map[string]*corev1.ServiceAccount{}, example: readExampleSecret(t, s),
	}
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decodeStrict(s, y)
		if err != nil {
			t.Fatalf("%s: built %s/%s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		if mo, ok := obj.(metav1.Object); ok {
			b.objects = append(b.objects, mo)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			b.deployments = append(b.deployments, o)
		case *appsv1.StatefulSet:
			b.statefulSets = append(b.statefulSets, o)
		case *corev1.Service:
			b.services = append(b.services, o)
		case *corev1.ConfigMap:
			b.configMaps[o.Name] = o
		case *corev1.Secret:
			b.secrets[o.Name] = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			b.hpas = append(b.hpas, o)
		case *policyv1.PodDisruptionBudget:
			b.pdbs = append(b.pdbs, o)
		case *networkingv1.NetworkPolicy:
			b.policies = append(b.policies, o)
		case *corev1.Namespace:
			b.namespaces = append(b.namespaces, o)
		case *corev1.ServiceAccount:
			b.accounts[o.Name] = o
		case *monitoringv1.ServiceMonitor:
			b.monitors = append(b.monitors, o)
		case *monitoringv1.PrometheusRule:
			b.rules = append(b.rules, o)
		case *kedav1alpha1.ScaledObject:
			b.scaled = append(b.scaled, o)
		case *networkingv1.Ingress:
			b.ingresses = append(b.ingresses, o)
		default:
			t.Fatalf("%s: %T is decoded but not checked: add it to bundle", dir, obj)
		}
	}
	return b
}

func readExampleSecret(t *testing.T, s *runtime.Scheme) *corev1.Secret {
	t.Helper()
	raw, err := os.ReadFile(secretExample)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := decodeStrict(s, raw)
	if err != nil {
		t.Fatalf("%s: %v", secretExample, err)
	}
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		t.Fatalf("%s holds a %T, want a Secret", secretExample, obj)
	}
	return sec
}

// secretValue reads key of Secret name from the build, or from the example Secret when the
// build has none of that name (prod: the operator creates it).
func (b *bundle) secretValue(name, key string) (string, bool) {
	s := b.secrets[name]
	if s == nil && b.example.Name == name {
		s = b.example
	}
	if s == nil {
		return "", false
	}
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

// secretKeys lists the keys of Secret name (see secretValue).
func (b *bundle) secretKeys(name string) ([]string, bool) {
	s := b.secrets[name]
	if s == nil && b.example.Name == name {
		s = b.example
	}
	if s == nil {
		return nil, false
	}
	var keys []string
	for k := range s.StringData {
		keys = append(keys, k)
	}
	for k := range s.Data {
		keys = append(keys, k)
	}
	return keys, true
}

// workload is a Deployment or a StatefulSet: what Services, budgets and policies select.
type workload struct {
	kind, name string
	replicas   int32
	pod        *corev1.PodTemplateSpec
}

func (b *bundle) workloads() []workload {
	var ws []workload
	for _, d := range b.deployments {
		ws = append(ws, workload{"Deployment", d.Name, replicas(d.Spec.Replicas), &d.Spec.Template})
	}
	for _, s := range b.statefulSets {
		ws = append(ws, workload{"StatefulSet", s.Name, replicas(s.Spec.Replicas), &s.Spec.Template})
	}
	return ws
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// TestKustomizationsBuild builds every kustomization and holds the output to what the
// binaries expect; see checks_test.go for each check.
func TestKustomizationsBuild(t *testing.T) {
	s := newScheme(t)
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			b := build(t, s, dir)
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) { c.check(t, b) })
			}
		})
	}
}
