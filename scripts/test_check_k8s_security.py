#!/usr/bin/env python3
"""Tests of scripts/check-k8s-security.py (`make k8s-check` runs them): the shipped
manifests pass, and each weakening of them, one at a time, is reported."""

import copy
import glob
import importlib.util
import os
import unittest

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
spec = importlib.util.spec_from_file_location(
    "check_k8s_security", os.path.join(ROOT, "scripts", "check-k8s-security.py")
)
chk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chk)

MANIFESTS = sorted(glob.glob(os.path.join(ROOT, "conf/k8s/*.yaml"))) + sorted(
    glob.glob(os.path.join(ROOT, "conf/k8s/observability/*.yaml"))
)
SHIPPED = chk.load(MANIFESTS)


def find(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    raise KeyError(f"{kind} {name}")


def container(docs, name, kind="Deployment"):
    return chk.pod_spec(find(docs, kind, name))[1]["containers"][0]


class Shipped(unittest.TestCase):
    def test_shipped_manifests_pass(self):
        pods, errors = chk.check_docs(SHIPPED)
        self.assertEqual(errors, [])
        # proxy, worker + 6 of the observability stack
        self.assertEqual(pods, 8)

    def test_shipped_dockerfile_passes(self):
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            self.assertEqual(chk.check_dockerfile(f.read()), [])


class Weakened(unittest.TestCase):
    def errors_after(self, mutate):
        docs = copy.deepcopy(SHIPPED)
        mutate(docs)
        return "\n".join(chk.check_docs(docs)[1])

    def test_token_mounted(self):
        def m(docs):
            del chk.pod_spec(find(docs, "Deployment", "hotplex-worker"))[1][
                "automountServiceAccountToken"
            ]

        self.assertIn("hotplex-worker: automountServiceAccountToken is not false", self.errors_after(m))

    def test_service_account_mounts_token(self):
        def m(docs):
            find(docs, "ServiceAccount", "hotplex-proxy")["automountServiceAccountToken"] = True

        self.assertIn("ServiceAccount hotplex-proxy mounts a token", self.errors_after(m))

    def test_security_context_fields(self):
        cases = {
            "allowPrivilegeEscalation": (True, "allowPrivilegeEscalation is not false"),
            "readOnlyRootFilesystem": (False, "readOnlyRootFilesystem is not true"),
            "privileged": (True, "privileged"),
            "capabilities": ({"drop": ["NET_RAW"]}, "capabilities do not drop ALL"),
        }
        for field, (value, msg) in cases.items():
            with self.subTest(field):

                def m(docs):
                    container(docs, "hotplex-proxy")["securityContext"][field] = value

                self.assertIn(f"container proxy: {msg}", self.errors_after(m))

    def test_added_capability(self):
        def m(docs):
            container(docs, "hotplex-proxy")["securityContext"]["capabilities"]["add"] = ["SETUID"]

        self.assertIn("container proxy: adds capabilities ['SETUID']", self.errors_after(m))

    def test_root_and_seccomp(self):
        def m(docs):
            spec = chk.pod_spec(find(docs, "Deployment", "hotplex-proxy"))[1]
            spec["securityContext"]["runAsNonRoot"] = False
            del container(docs, "hotplex-proxy")["securityContext"]["runAsNonRoot"]
            spec["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
            del container(docs, "hotplex-proxy")["securityContext"]["seccompProfile"]

        e = self.errors_after(m)
        self.assertIn("container proxy: runAsNonRoot is not true", e)
        self.assertIn("container proxy: seccompProfile is not RuntimeDefault", e)

    def test_root_worker_adds_exactly_the_five_capabilities(self):
        for add, shown in [
            (["SETUID", "SETGID", "CHOWN", "KILL", "DAC_OVERRIDE", "SYS_PTRACE"], "SYS_PTRACE"),
            (["SETUID", "SETGID"], "adds ['SETGID', 'SETUID']"),
            ([], "adds []"),
        ]:
            with self.subTest(add):

                def m(docs):
                    container(docs, "hotplex-worker")["securityContext"]["capabilities"]["add"] = add

                e = self.errors_after(m)
                self.assertIn("container worker: runs as root for per-session uids and must add exactly", e)
                self.assertIn(shown, e)

        def drop(docs):
            container(docs, "hotplex-worker")["securityContext"]["capabilities"]["drop"] = []

        self.assertIn("container worker: capabilities do not drop ALL", self.errors_after(drop))

    def test_root_worker_keeps_the_other_restrictions(self):
        for field, value, msg in [
            ("allowPrivilegeEscalation", True, "allowPrivilegeEscalation is not false"),
            ("readOnlyRootFilesystem", False, "readOnlyRootFilesystem is not true"),
            ("privileged", True, "privileged"),
            ("seccompProfile", {"type": "Unconfined"}, "seccompProfile is not RuntimeDefault"),
        ]:
            with self.subTest(field):

                def m(docs):
                    container(docs, "hotplex-worker")["securityContext"][field] = value

                self.assertIn(f"container worker: {msg}", self.errors_after(m))

    def test_root_exception_is_the_worker_container_only(self):
        def non_root_worker(docs):
            sc = container(docs, "hotplex-worker")["securityContext"]
            sc["runAsUser"], sc["runAsNonRoot"] = 10001, True

        self.assertIn("container worker: must run as uid 0", self.errors_after(non_root_worker))

        def sidecar(docs):
            spec = chk.pod_spec(find(docs, "Deployment", "hotplex-worker"))[1]
            side = copy.deepcopy(spec["containers"][0])
            side["name"] = "sidecar"
            spec["containers"].append(side)

        e = self.errors_after(sidecar)
        self.assertIn("container sidecar: runAsNonRoot is not true", e)
        self.assertIn("container sidecar: adds capabilities", e)

    def test_worker_config_runs_agents_as_per_session_uids(self):
        def edit(change):
            def m(docs):
                cm = find(docs, "ConfigMap", "hotplex-worker-config")
                cfg = yaml.safe_load(cm["data"]["worker.yaml"])
                change(cfg["agent"]["isolation"])
                cm["data"]["worker.yaml"] = yaml.safe_dump(cfg)

            return self.errors_after(m)

        self.assertIn("no agent.isolation.uid_range", edit(lambda iso: iso.pop("uid_range")))
        self.assertIn(
            "insecure_agents_as_worker_user",
            edit(lambda iso: iso.update(insecure_agents_as_worker_user=True)),
        )

    def test_secret_volume_readable_by_others(self):
        def m(docs):
            spec = chk.pod_spec(find(docs, "Deployment", "hotplex-proxy"))[1]
            tls = next(v for v in spec["volumes"] if v["name"] == "tls")
            del tls["secret"]["defaultMode"]

        self.assertIn("Secret volume tls has defaultMode 0644", self.errors_after(m))

    def test_host_namespace(self):
        def m(docs):
            chk.pod_spec(find(docs, "Deployment", "hotplex-proxy"))[1]["hostNetwork"] = True

        self.assertIn("hotplex-proxy: hostNetwork: true", self.errors_after(m))

    def test_image_by_tag(self):
        def m(docs):
            container(docs, "hotplex-worker")["image"] = "registry.example.com/hotplex-worker:0.1.0"

        self.assertIn("is not pinned by digest", self.errors_after(m))

    def test_no_egress_policy(self):
        def m(docs):
            docs.remove(find(docs, "NetworkPolicy", "hotplex-worker-egress"))
            docs.remove(find(docs, "NetworkPolicy", "hotplex-dns-egress"))

        self.assertIn("hotplex-worker: no egress NetworkPolicy selects it", self.errors_after(m))

    def test_no_default_deny(self):
        def m(docs):
            docs.remove(find(docs, "NetworkPolicy", "hotplex-default-deny"))

        self.assertIn("no default-deny NetworkPolicy", self.errors_after(m))

    def test_metadata_reachable(self):
        def m(docs):
            rule = find(docs, "NetworkPolicy", "hotplex-worker-egress")["spec"]["egress"][0]
            rule["to"][0]["ipBlock"]["except"].remove("169.254.0.0/16")

        e = self.errors_after(m)
        self.assertIn("reaches metadata service 169.254.169.254/32", e)

    def test_metadata_ipv6_reachable(self):
        def m(docs):
            rule = find(docs, "NetworkPolicy", "hotplex-worker-egress")["spec"]["egress"][0]
            rule["to"][1]["ipBlock"]["except"].remove("fc00::/7")

        self.assertIn("reaches metadata service fd00:ec2::254/128", self.errors_after(m))

    def test_private_range_reachable(self):
        def m(docs):
            rule = find(docs, "NetworkPolicy", "hotplex-worker-egress")["spec"]["egress"][0]
            rule["to"][0]["ipBlock"]["except"].remove("10.0.0.0/8")

        self.assertIn("reaches private/link-local range 10.0.0.0/8", self.errors_after(m))

    def test_egress_to_everything(self):
        def m(docs):
            find(docs, "NetworkPolicy", "hotplex-proxy-egress")["spec"]["egress"].append(
                {"ports": [{"port": 80, "protocol": "TCP"}]}
            )

        self.assertIn("hotplex-proxy-egress egress[1] has no `to`", self.errors_after(m))

    def test_narrow_block_inside_private_range(self):
        def m(docs):
            find(docs, "NetworkPolicy", "hotplex-proxy-egress")["spec"]["egress"].append(
                {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]}
            )

        self.assertIn("ipBlock 169.254.169.254/32 reaches metadata service", self.errors_after(m))

    def test_wide_trusted_proxies(self):
        def m(docs):
            cm = find(docs, "ConfigMap", "hotplex-config")
            cfg = yaml.safe_load(cm["data"]["hotplex.yaml"])
            cfg["limits"]["trusted_proxies"] = ["10.0.0.0/8"]
            cm["data"]["hotplex.yaml"] = yaml.safe_dump(cfg)

        self.assertIn("limits.trusted_proxies 10.0.0.0/8 is wider", self.errors_after(m))


class Dockerfile(unittest.TestCase):
    def test_unpinned_from(self):
        e = chk.check_dockerfile("FROM debian:bookworm-slim AS base\nFROM base AS app\n")
        self.assertEqual(len(e), 1)
        self.assertIn("FROM debian:bookworm-slim is not pinned", e[0])

    def test_unpinned_syntax(self):
        e = chk.check_dockerfile("# syntax=docker/dockerfile:1\nFROM scratch\n")
        self.assertIn("syntax frontend", e[0])

    def test_stage_reference_is_not_an_image(self):
        d = "FROM rust@sha256:" + "a" * 64 + " AS build\nFROM build\n"
        self.assertEqual(chk.check_dockerfile(d), [])


if __name__ == "__main__":
    unittest.main()
