#!/usr/bin/env python3
"""The security properties of the shipped deployment files (`make k8s-check`).

kubernetes-validate checks that the manifests are well-formed; this checks what they
allow. For every pod template (Deployment, DaemonSet, StatefulSet, Job, CronJob, Pod) in
the given manifests:

- the service account token is not mounted (`automountServiceAccountToken: false` on the
  pod, and on its ServiceAccount when the manifests define it), unless the pod is listed in
  NEEDS_API_TOKEN with the reason;
- the pod and container securityContext: runAsNonRoot (except NEEDS_ROOT), seccompProfile
  RuntimeDefault, no host namespaces, and per container allowPrivilegeEscalation false,
  readOnlyRootFilesystem true, capabilities drop ALL and add nothing (except
  ALLOWED_CAPS), not privileged; the one container of ROOT_WITH_CAPS runs as uid 0 and
  adds exactly its capabilities (nothing else of root), and its worker config runs agents
  as per-session uids (agent.isolation.uid_range, never insecure_agents_as_worker_user);
- Secret volumes in STRICT_NAMESPACES: a defaultMode without permission bits for others;
- every image pinned by digest (`...@sha256:<64 hex>`), except UNPINNED_OK;
- in the namespaces of STRICT_NAMESPACES: at least one NetworkPolicy with egress selects
  the pod, and the union of its egress rules reaches no cloud metadata address and no
  private, link-local or carrier-grade NAT range through an ipBlock (pod and namespace
  selectors name pods, never those addresses); a default-deny policy covers the namespace;
- the proxy ConfigMap's `limits.trusted_proxies` holds only narrow entries (IPv4 /24 or
  longer, IPv6 /64 or longer).

With --dockerfile FILE: every FROM is either an earlier stage or pinned by digest, and so
is the `# syntax=` frontend.

Usage: check-k8s-security.py [--dockerfile Dockerfile] MANIFEST.yaml...
Exit 0 when everything holds, 1 with one line per violation otherwise.
"""

import argparse
import ipaddress
import re
import sys

import yaml

# Namespaces whose pods get the full egress check (the product; the observability stack
# in `monitoring` is a reference deployment checked for the pod properties only).
STRICT_NAMESPACES = {"hotplex"}

# Pods (namespace/app name) that talk to the Kubernetes API and so keep their token.
NEEDS_API_TOKEN = {
    "monitoring/prometheus": "Kubernetes service discovery of the hotplex pods (read-only RBAC)",
    "monitoring/promtail": "Kubernetes service discovery of the pods whose logs it reads",
}
# Pods that run as root, with the reason.
NEEDS_ROOT = {
    "monitoring/promtail": "reads the node's root-owned /var/log/pods (hostPath)",
}
# Capabilities a container may add back after dropping ALL, per pod.
ALLOWED_CAPS = {
    "monitoring/promtail": {"DAC_READ_SEARCH"},
}
# Containers (namespace/app, container name) that run as uid 0 with exactly these
# capabilities added after dropping ALL, with the reason. Nothing else may run as root.
ROOT_WITH_CAPS = {
    ("hotplex/hotplex-worker", "worker"): (
        {"SETUID", "SETGID", "CHOWN", "KILL", "DAC_OVERRIDE"},
        "runs each session's agent as its own uid (agent.isolation.uid_range): switching "
        "needs SETUID/SETGID, the session directory CHOWN, the uid sweep KILL, removing the "
        "session's files DAC_OVERRIDE; a non-root container cannot hold them (Kubernetes "
        "grants no ambient capabilities)",
    ),
}
# Third-party images shipped by tag, with the reason (each a known gap, see
# docs/deployment.md "Hardening").
UNPINNED_OK = {
    "otel/opentelemetry-collector:0.104.0": "digest not resolvable offline when the manifests "
    "were pinned: `docker buildx imagetools inspect otel/opentelemetry-collector:0.104.0`",
}

# Addresses no pod may reach: cloud instance metadata services.
METADATA = [
    ipaddress.ip_network("169.254.169.254/32"),  # AWS, GCP, Azure, OCI, OpenStack
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
]
# Ranges an ipBlock must except: cluster networks (pods, services, the API server, nodes),
# link-local, carrier-grade NAT, loopback; NAT64 prefixes map to all of IPv4.
FORBIDDEN = [
    ipaddress.ip_network(n)
    for n in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
        "64:ff9b::/96",
    ]
]

POD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob", "Pod"}
DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def pod_spec(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        return doc.get("metadata", {}), doc.get("spec", {})
    if kind == "CronJob":
        tmpl = doc["spec"]["jobTemplate"]["spec"]["template"]
    else:
        tmpl = doc["spec"]["template"]
    return tmpl.get("metadata", {}), tmpl.get("spec", {})


def selector_matches(selector, labels):
    """A Kubernetes LabelSelector against a label map ({} selects everything)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(spec):
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def covered(net, excepts):
    """Whether the network `net` is wholly inside one of `excepts`."""
    return any(
        net.version == e.version and net.subnet_of(e) for e in excepts
    )


def ipblock_problems(block):
    """What an egress ipBlock lets through that it must not."""
    cidr = ipaddress.ip_network(block["cidr"], strict=False)
    excepts = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
    out = []
    for bad in METADATA + FORBIDDEN:
        if bad.version != cidr.version or not cidr.overlaps(bad):
            continue
        # The part of `bad` inside the block must be excepted as a whole.
        inside = bad if bad.subnet_of(cidr) else cidr
        if not covered(inside, excepts):
            what = "metadata service" if bad in METADATA else "private/link-local range"
            out.append(f"ipBlock {cidr} reaches {what} {bad}")
    return out


def check_egress(where, ns, labels, policies):
    errors = []
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == ns
        and "Egress" in policy_types(p["spec"])
        and selector_matches(p["spec"].get("podSelector"), labels)
    ]
    named = [p for p in selecting if p["spec"].get("podSelector") != {}]
    if not named:
        errors.append(f"{where}: no egress NetworkPolicy selects it (beyond a default deny)")
    for p in selecting:
        pname = p["metadata"]["name"]
        for i, rule in enumerate(p["spec"].get("egress") or []):
            peers = rule.get("to")
            if not peers:
                errors.append(
                    f"{where}: NetworkPolicy {pname} egress[{i}] has no `to`: every "
                    "destination, the metadata service included"
                )
                continue
            for peer in peers:
                if "ipBlock" in peer:
                    for msg in ipblock_problems(peer["ipBlock"]):
                        errors.append(f"{where}: NetworkPolicy {pname} egress[{i}]: {msg}")
    return errors


def check_pod(doc, service_accounts, policies):
    meta = doc["metadata"]
    ns = meta.get("namespace", "default")
    tmeta, spec = pod_spec(doc)
    labels = tmeta.get("labels") or {}
    app = labels.get("app.kubernetes.io/name", meta["name"])
    key = f"{ns}/{app}"
    where = f"{doc['kind']} {ns}/{meta['name']}"
    errors = []

    # Service account token.
    if key not in NEEDS_API_TOKEN:
        if spec.get("automountServiceAccountToken") is not False:
            errors.append(f"{where}: automountServiceAccountToken is not false")
        sa = service_accounts.get((ns, spec.get("serviceAccountName", "default")))
        if sa is not None and sa.get("automountServiceAccountToken") is not False:
            errors.append(
                f"{where}: its ServiceAccount {sa['metadata']['name']} mounts a token by default"
            )

    # Pod securityContext.
    psc = spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            errors.append(f"{where}: {host}: true")
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    if not containers:
        errors.append(f"{where}: no containers")
    for c in containers:
        cwhere = f"{where} container {c.get('name')}"
        csc = c.get("securityContext") or {}

        def eff(k):
            return csc.get(k, psc.get(k))

        root_caps = ROOT_WITH_CAPS.get((key, c.get("name")))
        if root_caps is not None:
            if eff("runAsUser") != 0 or eff("runAsNonRoot") is True:
                errors.append(
                    f"{cwhere}: must run as uid 0 (runAsUser: 0): its capabilities are "
                    "useless to a non-root container"
                )
        elif key not in NEEDS_ROOT and eff("runAsNonRoot") is not True:
            errors.append(f"{cwhere}: runAsNonRoot is not true")
        if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault":
            errors.append(f"{cwhere}: seccompProfile is not RuntimeDefault")
        if csc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{cwhere}: allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{cwhere}: readOnlyRootFilesystem is not true")
        if csc.get("privileged"):
            errors.append(f"{cwhere}: privileged")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            errors.append(f"{cwhere}: capabilities do not drop ALL")
        added = set(caps.get("add") or [])
        if root_caps is not None:
            if added != root_caps[0]:
                errors.append(
                    f"{cwhere}: runs as root for per-session uids and must add exactly "
                    f"{sorted(root_caps[0])}, adds {sorted(added)}"
                )
        elif added - ALLOWED_CAPS.get(key, set()):
            errors.append(
                f"{cwhere}: adds capabilities {sorted(added - ALLOWED_CAPS.get(key, set()))}"
            )
        image = c.get("image", "")
        if not DIGEST.match(image) and image not in UNPINNED_OK:
            errors.append(f"{cwhere}: image {image!r} is not pinned by digest (@sha256:...)")

    if ns in STRICT_NAMESPACES:
        errors += check_egress(where, ns, labels, policies)
        for v in spec.get("volumes") or []:
            secret = v.get("secret")
            if secret is None:
                continue
            # 0644 is the kubelet's default: readable by every uid of the pod.
            mode = secret.get("defaultMode", 0o644)
            if mode & 0o007:
                errors.append(
                    f"{where}: Secret volume {v.get('name')} has defaultMode {mode:04o}: "
                    "readable by others (use 0440 with fsGroup = the container's gid, or 0400)"
                )
    return errors


def check_worker_isolation(configmaps):
    """The worker config next to a root worker: agents as per-session uids."""
    errors = []
    for cm in configmaps:
        text = (cm.get("data") or {}).get("worker.yaml")
        if text is None:
            continue
        iso = ((yaml.safe_load(text) or {}).get("agent") or {}).get("isolation") or {}
        where = f"ConfigMap {cm['metadata']['name']}: worker.yaml"
        if not iso.get("uid_range"):
            errors.append(f"{where}: no agent.isolation.uid_range (agents would share a uid)")
        if iso.get("insecure_agents_as_worker_user"):
            errors.append(
                f"{where}: agent.isolation.insecure_agents_as_worker_user: the worker runs as "
                "root, so would its agents"
            )
    return errors


def check_default_deny(policies):
    errors = []
    for ns in sorted(STRICT_NAMESPACES):
        if not any(
            p["metadata"].get("namespace") == ns
            and p["spec"].get("podSelector") == {}
            and policy_types(p["spec"]) >= {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in policies
        ):
            errors.append(f"namespace {ns}: no default-deny NetworkPolicy (podSelector {{}}, Ingress+Egress)")
    return errors


def check_trusted_proxies(configmaps):
    errors = []
    for cm in configmaps:
        text = (cm.get("data") or {}).get("hotplex.yaml")
        if text is None:
            continue
        cfg = yaml.safe_load(text) or {}
        for entry in (cfg.get("limits") or {}).get("trusted_proxies") or []:
            net = ipaddress.ip_network(str(entry), strict=False)
            if net.prefixlen < (24 if net.version == 4 else 64):
                errors.append(
                    f"ConfigMap {cm['metadata']['name']}: limits.trusted_proxies {entry} is wider "
                    "than the load balancer (/24 or /64 at most): anything in it can forge "
                    "X-Forwarded-For"
                )
    return errors


def check_docs(docs):
    service_accounts = {
        (d["metadata"].get("namespace", "default"), d["metadata"]["name"]): d
        for d in docs
        if d.get("kind") == "ServiceAccount"
    }
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    errors = check_default_deny(policies)
    pods = 0
    for d in docs:
        if d.get("kind") in POD_KINDS:
            pods += 1
            errors += check_pod(d, service_accounts, policies)
    errors += check_trusted_proxies([d for d in docs if d.get("kind") == "ConfigMap"])
    errors += check_worker_isolation([d for d in docs if d.get("kind") == "ConfigMap"])
    return pods, errors


def check_dockerfile(text, name="Dockerfile"):
    errors = []
    stages = set()
    lines = text.splitlines()
    if lines and lines[0].lower().startswith("# syntax="):
        ref = lines[0].split("=", 1)[1].strip()
        if not DIGEST.match(ref):
            errors.append(f"{name}:1: syntax frontend {ref!r} is not pinned by digest")
    froms = 0
    for n, line in enumerate(lines, 1):
        m = re.match(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if not m:
            continue
        froms += 1
        image, stage = m.group(1), m.group(2)
        if image.lower() not in stages and image != "scratch" and not DIGEST.match(image):
            errors.append(f"{name}:{n}: FROM {image} is not pinned by digest (@sha256:...)")
        if stage:
            stages.add(stage.lower())
    if froms == 0:
        errors.append(f"{name}: no FROM line")
    return errors


def load(paths):
    docs = []
    for p in paths:
        with open(p) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dockerfile", action="append", default=[])
    ap.add_argument("manifests", nargs="+")
    args = ap.parse_args()
    pods, errors = check_docs(load(args.manifests))
    for d in args.dockerfile:
        with open(d) as f:
            errors += check_dockerfile(f.read(), d)
    for e in errors:
        print(f"check-k8s-security: {e}", file=sys.stderr)
    if errors:
        return 1
    placeholders = sum(
        1
        for d in load(args.manifests)
        if d.get("kind") in POD_KINDS
        for c in pod_spec(d)[1].get("containers", [])
        if c.get("image", "").endswith("@sha256:" + "0" * 64)
    )
    print(
        f"check-k8s-security: {pods} pod templates, {len(args.dockerfile)} Dockerfile(s): ok"
        + (f" ({placeholders} placeholder digest(s) to replace before deploying)" if placeholders else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
