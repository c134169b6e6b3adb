package k8s_test

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/linkhop/linkhop/config"
)

const (
	// image is the one image both linkhop Deployments run.
	image = "ghcr.io/linkhop/linkhop"
	// imageUser is the numeric USER of the Dockerfile's final stage (TestDockerfile holds
	// the Dockerfile to it).
	imageUser = 65532
	// shutdownMargin is what a pod needs after its drain: closing Redis, flushing logs.
	shutdownMargin = 5 * time.Second
)

// binaries maps the path of each binary in the image to the process whose configuration
// it loads.
var binaries = map[string]config.Process{
	"/usr/local/bin/api":    config.API,
	"/usr/local/bin/worker": config.Worker,
}

// checks run on the output of every kustomization.
var checks = []struct {
	name  string
	check func(*testing.T, *bundle)
}{
	{"linkhop containers", checkContainers},
	{"images", checkImages},
	{"services", checkServices},
	{"autoscalers", checkAutoscalers},
	{"disruption budgets", checkBudgets},
	{"pod security", checkPodSecurity},
	{"network policies", checkNetworkPolicies},
	{"redis", checkRedis},
	{"namespace", checkNamespace},
	{"monitoring", checkMonitoring},
	{"ingress", checkIngress},
}

// linkhopPod is one linkhop Deployment with the configuration its container would load.
type linkhopPod struct {
	name    string
	process config.Process
	pod     *corev1.PodTemplateSpec
	cfg     config.Config
}

// linkhopPods resolves each linkhop Deployment's environment from the build (ConfigMaps,
// Secrets, the example Secret for prod) and loads it with config.Load, exactly as the binary
// would at start. Environment names the binaries do not read fail here.
//
// Only checkContainers reports problems (report is t); the other checks pass quiet and
// use whatever loads, so one mistake is reported once.
func linkhopPods(report reporter, b *bundle) []linkhopPod {
	t := report
	allowed := map[string]bool{}
	for _, n := range config.EnvNames() {
		allowed[n], allowed[n+"_FILE"] = true, true
	}
	var out []linkhopPod
	for _, d := range b.deployments {
		spec := d.Spec.Template.Spec
		if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
			t.Errorf("%s: want exactly one container and no init containers", d.Name)
			continue
		}
		c := spec.Containers[0]
		if len(c.Command) != 1 || len(c.Args) != 0 {
			t.Errorf("%s: command %q args %q: want the binary alone", d.Name, c.Command, c.Args)
			continue
		}
		proc, ok := binaries[c.Command[0]]
		if !ok {
			t.Errorf("%s: command %q is not a binary in the image", d.Name, c.Command[0])
			continue
		}
		env := resolveEnv(t, b, d.Name, c)
		for name := range env {
			if !allowed[name] {
				t.Errorf("%s: environment variable %s is not read by the binaries (config.EnvNames)", d.Name, name)
			}
		}
		cfg, err := config.Load(proc, func(n string) (string, bool) { v, ok := env[n]; return v, ok })
		if err != nil {
			t.Errorf("%s: the binary would refuse to start: %v", d.Name, err)
			continue
		}
		out = append(out, linkhopPod{d.Name, proc, &d.Spec.Template, cfg})
	}
	return out
}

// resolveEnv is the environment the kubelet would give container c.
func resolveEnv(t reporter, b *bundle, owner string, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm := b.configMaps[ef.ConfigMapRef.Name]
			if cm == nil {
				if !isTrue(ef.ConfigMapRef.Optional) {
					t.Errorf("%s: envFrom ConfigMap %q is not in the build", owner, ef.ConfigMapRef.Name)
				}
				continue
			}
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			keys, ok := b.secretKeys(ef.SecretRef.Name)
			if !ok && !isTrue(ef.SecretRef.Optional) {
				t.Errorf("%s: envFrom Secret %q is neither in the build nor the example", owner, ef.SecretRef.Name)
			}
			for _, k := range keys {
				env[ef.Prefix+k], _ = b.secretValue(ef.SecretRef.Name, k)
			}
		}
	}
	for _, e := range c.Env { // explicit entries win over envFrom, as in the kubelet
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			// Optional or not, the Secret we know (the build's or the example) shows every
			// key the pods read, so the example stays a complete list for operators.
			if v, ok := b.secretValue(ref.Name, ref.Key); ok {
				env[e.Name] = v
			} else {
				t.Errorf("%s: %s: Secret %q has no key %q (neither in the build nor the example)", owner, e.Name, ref.Name, ref.Key)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if cm := b.configMaps[ref.Name]; cm != nil && cm.Data[ref.Key] != "" {
				env[e.Name] = cm.Data[ref.Key]
			} else if !isTrue(ref.Optional) {
				t.Errorf("%s: %s: ConfigMap %q has no key %q", owner, e.Name, ref.Name, ref.Key)
			}
		default:
			t.Errorf("%s: %s: only values, Secret and ConfigMap references are expected", owner, e.Name)
		}
	}
	return env
}

func isTrue(p *bool) bool { return p != nil && *p }

// reporter is the part of testing.T that linkhopPods needs.
type reporter interface {
	Errorf(format string, args ...any)
	Fatal(args ...any)
}

// quiet drops the reports of checks that are not about the container itself.
type quiet struct{ testing.TB }

func (quiet) Errorf(string, ...any) {}

// checkContainers holds each linkhop container to the configuration its binary loads:
// the listen port, the probes, the scrape annotation and the shutdown timing.
func checkContainers(t *testing.T, b *bundle) {
	pods := linkhopPods(t, b)
	seen := map[config.Process]int{}
	for _, p := range pods {
		seen[p.process]++
		c := p.pod.Spec.Containers[0]
		_, portStr, err := net.SplitHostPort(p.cfg.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(portStr)
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
			return int(cp.ContainerPort) == port && cp.Protocol == corev1.ProtocolTCP
		}) {
			t.Errorf("%s: HTTP_ADDR is %s but no containerPort is %d/TCP", p.name, p.cfg.HTTPAddr, port)
		}
		probes := []struct {
			kind, path string
			probe      *corev1.Probe
		}{
			{"readiness", "/readyz", c.ReadinessProbe},
			{"liveness", "/healthz", c.LivenessProbe},
		}
		for _, pr := range probes {
			switch {
			case pr.probe == nil:
				t.Errorf("%s: no %s probe", p.name, pr.kind)
			case pr.probe.HTTPGet == nil:
				t.Errorf("%s: %s probe is not an httpGet (the image has no shell)", p.name, pr.kind)
			case pr.probe.HTTPGet.Path != pr.path:
				t.Errorf("%s: %s probe path %q, want %q", p.name, pr.kind, pr.probe.HTTPGet.Path, pr.path)
			default:
				if got, ok := containerPort(c, pr.probe.HTTPGet.Port); !ok {
					t.Errorf("%s: %s probe port %s is not a port of the container", p.name, pr.kind, pr.probe.HTTPGet.Port.String())
				} else if got != port {
					t.Errorf("%s: %s probe port is %d, the binary listens on %d", p.name, pr.kind, got, port)
				}
			}
		}
		if c.StartupProbe != nil && (c.StartupProbe.HTTPGet == nil || c.StartupProbe.HTTPGet.Path != "/healthz") {
			t.Errorf("%s: a startup probe must be an httpGet of /healthz", p.name)
		}
		if a := p.pod.Annotations["prometheus.io/port"]; a != "" && a != portStr {
			t.Errorf("%s: prometheus.io/port %q, the binary serves /metrics on %s", p.name, a, portStr)
		}
		if a := p.pod.Annotations["prometheus.io/path"]; a != "" && a != "/metrics" {
			t.Errorf("%s: prometheus.io/path %q, want /metrics", p.name, a)
		}

		grace := 30 * time.Second // the Kubernetes default
		if g := p.pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		var preStop time.Duration
		if l := c.Lifecycle; l != nil && l.PreStop != nil {
			if l.PreStop.Sleep == nil {
				t.Errorf("%s: preStop must be a sleep (the image has no shell)", p.name)
			} else {
				preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
			}
		}
		if need := preStop + p.cfg.ShutdownTimeout + shutdownMargin; grace < need {
			t.Errorf("%s: terminationGracePeriodSeconds %v < preStop %v + SHUTDOWN_TIMEOUT %v + %v: the kubelet would kill the drain",
				p.name, grace, preStop, p.cfg.ShutdownTimeout, shutdownMargin)
		}
		if p.process == config.API && preStop == 0 {
			t.Errorf("%s: the api needs a preStop pause so endpoints drop it before it stops accepting", p.name)
		}
	}
	if seen[config.API] != 1 || seen[config.Worker] != 1 {
		t.Errorf("want one api and one worker Deployment, got %d and %d", seen[config.API], seen[config.Worker])
	}
}

// containerPort resolves a probe or Service target port (number or name) on c.
func containerPort(c corev1.Container, p intstr.IntOrString) (int, bool) {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}

// checkImages: one image for both Deployments; overlays pin a tag, the base leaves it to them.
func checkImages(t *testing.T, b *bundle) {
	refs := map[string]bool{}
	for _, d := range b.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			refs[c.Image] = true
			repo, tag := splitImage(c.Image)
			if repo != image {
				t.Errorf("%s/%s: image %q, want %s", d.Name, c.Name, c.Image, image)
			}
			switch {
			case b.overlay && (tag == "" || tag == "latest"):
				t.Errorf("%s/%s: an overlay must pin the image (tag or digest), got %q", d.Name, c.Name, c.Image)
			case !b.overlay && tag != "":
				t.Errorf("%s/%s: the base leaves the tag to the overlays, got %q", d.Name, c.Name, c.Image)
			}
		}
	}
	if len(refs) != 1 {
		t.Errorf("api and worker must run the same image, got %v", refs)
	}
}

// splitImage splits "repo[:tag][@digest]" into the repository and the tag or digest.
func splitImage(ref string) (repo, tag string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return strings.SplitN(ref[:i], ":", 2)[0], ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

// selected lists the workloads whose pods sel selects.
func selected(b *bundle, sel labels.Selector) []workload {
	var out []workload
	for _, w := range b.workloads() {
		if sel.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func labelSelector(t *testing.T, s *metav1.LabelSelector) labels.Selector {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// checkServices: each Service selects exactly one workload and targets ports it has.
func checkServices(t *testing.T, b *bundle) {
	for _, s := range b.services {
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s selects nothing", s.Name)
			continue
		}
		ws := selected(b, labels.SelectorFromSet(s.Spec.Selector))
		if len(ws) != 1 {
			t.Errorf("Service %s selects %d workloads, want 1", s.Name, len(ws))
			continue
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			if !slices.ContainsFunc(ws[0].pod.Spec.Containers, func(c corev1.Container) bool {
				_, ok := containerPort(c, target)
				return ok
			}) {
				t.Errorf("Service %s port %s: %s %s has no port %s", s.Name, p.Name, ws[0].kind, ws[0].name, target.String())
			}
		}
	}
}

// checkAutoscalers: each HPA scales a Deployment of the build whose containers request
// the resources it measures, from at least two replicas (one pod is not highly available).
func checkAutoscalers(t *testing.T, b *bundle) {
	for _, h := range b.hpas {
		ref := h.Spec.ScaleTargetRef
		i := slices.IndexFunc(b.deployments, func(d *appsv1.Deployment) bool { return d.Name == ref.Name })
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || i < 0 {
			t.Errorf("HPA %s targets %s %s, which is not a Deployment of the build", h.Name, ref.Kind, ref.Name)
			continue
		}
		d := b.deployments[i]
		minR := replicas(h.Spec.MinReplicas)
		if minR < 2 || h.Spec.MaxReplicas < minR {
			t.Errorf("HPA %s: replicas %d..%d, want at least 2 and min ≤ max", h.Name, minR, h.Spec.MaxReplicas)
		}
		if r := replicas(d.Spec.Replicas); r < minR {
			t.Errorf("Deployment %s has %d replicas, below its HPA's minimum %d", d.Name, r, minR)
		}
		for _, m := range h.Spec.Metrics {
			if m.Resource == nil {
				continue
			}
			for _, c := range d.Spec.Template.Spec.Containers {
				if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
					t.Errorf("HPA %s scales on %s but %s/%s requests none", h.Name, m.Resource.Name, d.Name, c.Name)
				}
			}
		}
	}
	for _, so := range b.scaled {
		ref := so.Spec.ScaleTargetRef
		if ref == nil || ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" ||
			!slices.ContainsFunc(b.deployments, func(d *appsv1.Deployment) bool { return d.Name == ref.Name }) {
			t.Errorf("ScaledObject %s does not target a Deployment of the build: %+v", so.Name, ref)
			continue
		}
		if minR := replicas(so.Spec.MinReplicaCount); minR < 2 || so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < minR {
			t.Errorf("ScaledObject %s: replicas %d..%v, want at least 2 and min ≤ max", so.Name, minR, so.Spec.MaxReplicaCount)
		}
		if len(so.Spec.Triggers) == 0 {
			t.Errorf("ScaledObject %s has no trigger", so.Name)
		}
	}
	for _, d := range b.deployments {
		hpa := slices.ContainsFunc(b.hpas, func(h *autoscalingv2.HorizontalPodAutoscaler) bool { return h.Spec.ScaleTargetRef.Name == d.Name })
		keda := slices.ContainsFunc(b.scaled, func(so *kedav1alpha1.ScaledObject) bool {
			return so.Spec.ScaleTargetRef != nil && so.Spec.ScaleTargetRef.Name == d.Name
		})
		switch {
		case hpa && keda:
			t.Errorf("Deployment %s has both an HPA and a KEDA ScaledObject (which makes its own HPA): they would fight", d.Name)
		case !hpa && !keda:
			t.Errorf("Deployment %s has no HorizontalPodAutoscaler", d.Name)
		}
	}
}

// checkBudgets: each PDB covers exactly one workload and still lets a node drain.
func checkBudgets(t *testing.T, b *bundle) {
	covered := map[string]bool{}
	for _, p := range b.pdbs {
		ws := selected(b, labelSelector(t, p.Spec.Selector))
		if len(ws) != 1 {
			t.Errorf("PDB %s selects %d workloads, want 1", p.Name, len(ws))
			continue
		}
		covered[ws[0].name] = true
		if m := p.Spec.MinAvailable; m != nil && m.Type == intstr.Int && m.IntVal >= ws[0].replicas {
			t.Errorf("PDB %s: minAvailable %d with %d replicas blocks every eviction", p.Name, m.IntVal, ws[0].replicas)
		}
	}
	for _, d := range b.deployments {
		if !covered[d.Name] {
			t.Errorf("Deployment %s has no PodDisruptionBudget", d.Name)
		}
	}
}

// checkPodSecurity holds every pod of the build (Redis too) to the "restricted" Pod Security
// Standard and a read-only root filesystem, with resources set.
func checkPodSecurity(t *testing.T, b *bundle) {
	for _, w := range b.workloads() {
		spec := w.pod.Spec
		psc := spec.SecurityContext
		if psc == nil || !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: pod must set runAsNonRoot and a non-zero runAsUser", w.name)
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod must use the RuntimeDefault seccomp profile", w.name)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken must be false", w.name)
		}
		if sa := spec.ServiceAccountName; sa != "" && b.accounts[sa] == nil {
			t.Errorf("%s: ServiceAccount %q is not in the build", w.name, sa)
		}
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			t.Errorf("%s: no host namespaces", w.name)
		}
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil || !isTrue(sc.ReadOnlyRootFilesystem) || sc.AllowPrivilegeEscalation == nil ||
				*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") ||
				len(sc.Capabilities.Add) != 0 || isTrue(sc.Privileged) {
				t.Errorf("%s/%s: want readOnlyRootFilesystem, no privilege escalation, all capabilities dropped", w.name, c.Name)
			}
			r := c.Resources
			if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
				t.Errorf("%s/%s: want cpu and memory requests and a memory limit", w.name, c.Name)
			}
			if repo, _ := splitImage(c.Image); repo == image && (psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != imageUser) {
				t.Errorf("%s: runAsUser must be the image's user %d", w.name, imageUser)
			}
		}
	}
}

// mustExcept are the ranges the worker's internet rule must cut out: the private and
// special-purpose ranges where cluster pods, Services, nodes and cloud metadata live.
var mustExcept = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("64:ff9b::/96"),
}

// sentinelPort is where Redis Sentinel listens by default.
const sentinelPort = 26379

// checkNetworkPolicies: every linkhop pod has egress closed except cluster DNS and Redis;
// the worker may also reach the public internet on 80/443, the api may not.
func checkNetworkPolicies(t *testing.T, b *bundle) {
	for _, np := range b.policies {
		if len(selected(b, labelSelector(t, &np.Spec.PodSelector))) == 0 {
			t.Errorf("NetworkPolicy %s selects no pod", np.Name)
		}
	}
	for _, p := range linkhopPods(quiet{t}, b) {
		redisPort, redisHost := 6379, ""
		if len(p.cfg.RedisClusterAddrs) == 0 {
			u, err := url.Parse(p.cfg.RedisURL)
			if err != nil {
				t.Fatal(err)
			}
			redisHost = u.Hostname()
			if u.Port() != "" {
				redisPort, _ = strconv.Atoi(u.Port())
			}
		}
		var egress []networkingv1.NetworkPolicyEgressRule
		closed := false
		for _, np := range b.policies {
			if !labelSelector(t, &np.Spec.PodSelector).Matches(labels.Set(p.pod.Labels)) {
				continue
			}
			if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				closed = true
				egress = append(egress, np.Spec.Egress...)
			}
		}
		if !closed {
			t.Errorf("%s: no NetworkPolicy closes its egress", p.name)
			continue
		}
		var dns, redis, internet bool
		for i, r := range egress {
			ports := rulePorts(r)
			switch {
			case len(ports) > 0 && allIn(ports, 53):
				dns = true
				for _, peer := range r.To {
					if !isDNSPeer(peer) {
						t.Errorf("%s: egress rule %d opens port 53 to more than the cluster DNS", p.name, i+1)
					}
				}
			case len(ports) > 0 && allIn(ports, redisPort, sentinelPort) && slices.Contains(ports, redisPort):
				redis = redis || reachesRedis(t, b, r, redisHost)
				for _, peer := range r.To {
					if peer.NamespaceSelector != nil || peer.IPBlock != nil && isAll(peer.IPBlock.CIDR) {
						t.Errorf("%s: egress rule %d opens the Redis port to more than Redis", p.name, i+1)
					}
				}
			case isInternetRule(r):
				internet = true
				if err := checkInternetRule(r); err != nil {
					t.Errorf("%s: egress rule %d: %v", p.name, i+1, err)
				}
			default:
				t.Errorf("%s: egress rule %d opens something that is neither DNS, Redis nor the public internet on 80/443: %+v", p.name, i+1, r)
			}
		}
		if !dns {
			t.Errorf("%s: egress does not allow cluster DNS", p.name)
		}
		// The base cannot know where Redis is: each overlay says.
		if !redis && b.overlay {
			t.Errorf("%s: egress does not allow its Redis (%s port %d)", p.name, p.cfg.RedisURL, redisPort)
		}
		if want := p.process == config.Worker; internet != want {
			t.Errorf("%s: internet egress is %v, want %v", p.name, internet, want)
		}
	}
}

// isDNSPeer: the DNS pods picked by a pod selector, or one address (NodeLocal DNSCache).
func isDNSPeer(p networkingv1.NetworkPolicyPeer) bool {
	if p.IPBlock != nil {
		pre, err := netip.ParsePrefix(p.IPBlock.CIDR)
		return err == nil && pre.IsSingleIP()
	}
	return p.PodSelector != nil && (len(p.PodSelector.MatchLabels) > 0 || len(p.PodSelector.MatchExpressions) > 0)
}

func rulePorts(r networkingv1.NetworkPolicyEgressRule) []int {
	var ps []int
	for _, p := range r.Ports {
		if p.Port == nil || p.Port.Type != intstr.Int || p.EndPort != nil {
			return nil // every port, a named port or a range: never narrow enough
		}
		ps = append(ps, int(p.Port.IntVal))
	}
	return ps
}

func allIn(ports []int, allowed ...int) bool {
	for _, p := range ports {
		if !slices.Contains(allowed, p) {
			return false
		}
	}
	return true
}

func isAll(cidr string) bool { return cidr == "0.0.0.0/0" || cidr == "::/0" }

func isInternetRule(r networkingv1.NetworkPolicyEgressRule) bool {
	return slices.ContainsFunc(r.To, func(p networkingv1.NetworkPolicyPeer) bool {
		return p.IPBlock != nil && isAll(p.IPBlock.CIDR)
	})
}

// checkInternetRule: only ipBlocks, each cutting out every range of mustExcept of its
// family, on ports 80 and 443 only.
func checkInternetRule(r networkingv1.NetworkPolicyEgressRule) error {
	ports := rulePorts(r)
	if len(ports) == 0 || !allIn(ports, 80, 443) {
		return fmt.Errorf("ports %v, want only 80 and 443", ports)
	}
	for _, peer := range r.To {
		if peer.IPBlock == nil || peer.PodSelector != nil || peer.NamespaceSelector != nil {
			return fmt.Errorf("an internet rule may hold only ipBlocks")
		}
		block, err := netip.ParsePrefix(peer.IPBlock.CIDR)
		if err != nil {
			return err
		}
		var except []netip.Prefix
		for _, e := range peer.IPBlock.Except {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return err
			}
			except = append(except, p)
		}
		for _, must := range mustExcept {
			if must.Addr().Is4() != block.Addr().Is4() || !block.Overlaps(must) {
				continue
			}
			if !slices.ContainsFunc(except, func(e netip.Prefix) bool {
				return e.Bits() <= must.Bits() && e.Contains(must.Addr())
			}) {
				return fmt.Errorf("%s does not except %s", block, must)
			}
		}
	}
	return nil
}

// reachesRedis says whether rule r lets a pod reach the Redis at host: an in-cluster
// Service's pods by podSelector, or an external address by ipBlock.
func reachesRedis(t *testing.T, b *bundle, r networkingv1.NetworkPolicyEgressRule, host string) bool {
	t.Helper()
	var svc *corev1.Service
	for _, s := range b.services {
		if host != "" && (host == s.Name || strings.HasPrefix(host, s.Name+".")) {
			svc = s
		}
	}
	for _, peer := range r.To {
		switch {
		case svc != nil && peer.PodSelector != nil && peer.NamespaceSelector == nil:
			sel := labelSelector(t, peer.PodSelector)
			for _, w := range selected(b, labels.SelectorFromSet(svc.Spec.Selector)) {
				if sel.Matches(labels.Set(w.pod.Labels)) {
					return true
				}
			}
		case svc == nil && peer.IPBlock != nil:
			return true // an external Redis: its address is the operator's to fill in
		}
	}
	return false
}

// checkRedis holds any Redis the build runs to asynq's needs (docs/deploy.md#redis):
// version ≥ 6.2, AOF on, noeviction, data on a volume; and the linkhop pods' REDIS_URL to
// a Service of the build that selects it.
func checkRedis(t *testing.T, b *bundle) {
	var redisPods []workload
	for _, w := range b.workloads() {
		for _, c := range w.pod.Spec.Containers {
			repo, tag := splitImage(c.Image)
			if repo != "redis" && !strings.HasSuffix(repo, "/redis") {
				continue
			}
			redisPods = append(redisPods, w)
			if !versionAtLeast(tag, 6, 2) {
				t.Errorf("%s: image %s: asynq needs Redis ≥ 6.2", w.name, c.Image)
			}
			opts := redisOptions(append(slices.Clone(c.Command), c.Args...))
			for opt, want := range map[string]string{"appendonly": "yes", "maxmemory-policy": "noeviction"} {
				if opts[opt] != want {
					t.Errorf("%s: redis --%s is %q, want %q", w.name, opt, opts[opt], want)
				}
			}
			dir := opts["dir"]
			if dir == "" {
				dir = "/data" // the official image's working directory
			}
			if w.kind != "StatefulSet" || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.MountPath == dir && slices.ContainsFunc(b.claimTemplates(w.name), func(n string) bool { return n == m.Name })
			}) {
				t.Errorf("%s: Redis data (%s) must live on a StatefulSet's volume claim", w.name, dir)
			}
		}
	}
	if len(redisPods) == 0 {
		return // an external Redis
	}
	for _, p := range linkhopPods(quiet{t}, b) {
		u, err := url.Parse(p.cfg.RedisURL)
		if err != nil || len(p.cfg.RedisClusterAddrs) > 0 {
			t.Errorf("%s: with an in-cluster Redis, REDIS_URL should point at it", p.name)
			continue
		}
		i := slices.IndexFunc(b.services, func(s *corev1.Service) bool {
			return u.Hostname() == s.Name || strings.HasPrefix(u.Hostname(), s.Name+".")
		})
		if i < 0 {
			t.Errorf("%s: REDIS_URL host %q is not a Service of the build", p.name, u.Hostname())
			continue
		}
		s := b.services[i]
		port := 6379
		if u.Port() != "" {
			port, _ = strconv.Atoi(u.Port())
		}
		if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == port }) {
			t.Errorf("%s: Service %s has no port %d", p.name, s.Name, port)
		}
		ws := selected(b, labels.SelectorFromSet(s.Spec.Selector))
		if len(ws) != 1 || !slices.ContainsFunc(redisPods, func(w workload) bool { return w.name == ws[0].name }) {
			t.Errorf("%s: Service %s does not select the Redis StatefulSet", p.name, s.Name)
		}
	}
}

// redisOptions reads "--name value" pairs of a redis-server command line; as in
// redis-server, a later occurrence wins.
func redisOptions(args []string) map[string]string {
	opts := map[string]string{}
	for i := 0; i < len(args); i++ {
		if name, ok := strings.CutPrefix(args[i], "--"); ok && i+1 < len(args) {
			opts[name] = args[i+1]
			i++
		}
	}
	return opts
}

func (b *bundle) claimTemplates(statefulSet string) []string {
	var names []string
	for _, s := range b.statefulSets {
		if s.Name == statefulSet {
			for _, c := range s.Spec.VolumeClaimTemplates {
				names = append(names, c.Name)
			}
		}
	}
	return names
}

// versionAtLeast reads "MAJOR.MINOR[.PATCH][-suffix]" from an image tag.
func versionAtLeast(tag string, major, minor int) bool {
	tag, _, _ = strings.Cut(tag, "-")
	parts := strings.Split(tag, ".")
	if len(parts) < 2 {
		return false // "latest", "alpine" or a digest: not provably new enough
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// checkNamespace: an overlay creates its namespace with the restricted Pod Security level
// and puts everything in it; the base names no namespace.
func checkNamespace(t *testing.T, b *bundle) {
	if !b.overlay {
		if len(b.namespaces) != 0 {
			t.Error("the base must not create a Namespace")
		}
		for _, o := range b.objects {
			if o.GetNamespace() != "" {
				t.Errorf("%s: the base must not set a namespace", o.GetName())
			}
		}
		return
	}
	if len(b.namespaces) != 1 {
		t.Fatalf("an overlay creates exactly one Namespace, got %d", len(b.namespaces))
	}
	ns := b.namespaces[0]
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("Namespace %s: pod-security enforce %q, want restricted", ns.Name, got)
	}
	for _, o := range b.objects {
		if _, isNS := o.(*corev1.Namespace); !isNS && o.GetNamespace() != ns.Name {
			t.Errorf("%s is in namespace %q, want %q", o.GetName(), o.GetNamespace(), ns.Name)
		}
	}
}
