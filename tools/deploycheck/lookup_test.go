package deploycheck

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// secretAPI answers the two requests Helm's lookup makes for a v1 Secret: discovery of /api/v1,
// then GET of one Secret. It stands in for the API server because no cluster runs here; it serves
// real HTTP on loopback to the real helm binary.
type secretAPI struct {
	mu      sync.Mutex
	secrets map[string][]byte // API path -> Secret JSON
	gets    map[string]int    // API path -> GETs seen
	other   []string          // requests outside the two above
}

func (a *secretAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodGet && r.URL.Path == "/api/v1" {
		fmt.Fprint(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[`+
			`{"name":"secrets","singularName":"secret","namespaced":true,"kind":"Secret","verbs":["get","list"]}]}`)
		return
	}
	if r.Method == http.MethodGet {
		a.gets[r.URL.Path]++
		if body, ok := a.secrets[r.URL.Path]; ok {
			w.Write(body)
			return
		}
	} else {
		a.other = append(a.other, r.Method+" "+r.URL.Path)
	}
	w.WriteHeader(http.StatusNotFound)
	fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
}

// TestChartPublishTokenKeptAcrossUpgrades: the first render against a cluster without the Secret
// generates a token; once that Secret exists, the next render (an upgrade) reads it back through
// lookup and keeps it, so producers and running pods keep working. A token given as a value
// still wins over the live one.
func TestChartPublishTokenKeptAcrossUpgrades(t *testing.T) {
	api := &secretAPI{secrets: map[string][]byte{}, gets: map[string]int{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {token: not-a-real-token}}]
contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: wsgate-test}}]
current-context: fake
`, srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	secretPath := "/api/v1/namespaces/wsgate-test/secrets/" + defaultPublishName

	// --dry-run=server lets helm template call lookup against the cluster in the kubeconfig.
	renderLive := func(args ...string) (string, string) {
		t.Helper()
		out, err := render(t, release, chartDir(t), append([]string{"--dry-run=server", "--kubeconfig", kubeconfig}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "live", []byte(out))
		token := checkPublishSecret(t, ms, defaultPublishName, defaultPublishKey, len(args) == 0)
		dep := ms.one(t, "Deployment").Typed.(*appsv1.Deployment)
		return token, dep.Spec.Template.Annotations["checksum/config"]
	}

	first, sum1 := renderLive()
	api.mu.Lock()
	looked := api.gets[secretPath]
	api.mu.Unlock()
	if looked == 0 {
		t.Fatalf("the chart never looked up %s (requests: %v)", secretPath, api.gets)
	}

	// The install created the Secret with the first token.
	live, err := json.Marshal(corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: defaultPublishName, Namespace: "wsgate-test"},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{defaultPublishKey: []byte(first)},
	})
	if err != nil {
		t.Fatal(err)
	}
	api.mu.Lock()
	api.secrets[secretPath] = live
	api.mu.Unlock()

	for i := 0; i < 2; i++ {
		again, sum := renderLive()
		if again != first {
			t.Errorf("upgrade %d: publish token changed although the live Secret holds one", i+1)
		}
		if sum != sum1 {
			t.Errorf("upgrade %d: checksum/config changed (%s -> %s): the pods would restart", i+1, sum1, sum)
		}
	}
	if v, _ := renderLive("--set", "publishToken.value="+testPublishToken); v != testPublishToken {
		t.Errorf("publishToken.value did not replace the live token")
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.other) > 0 {
		t.Errorf("helm template --dry-run=server wrote to the cluster: %v", api.other)
	}
}
