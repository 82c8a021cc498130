#!/usr/bin/env python3
"""Tests of scripts/check-cycles.py (`make lint` runs them): the proxy's tree passes, and a
mutual import, an import of `config` above itself, and an allowed pair are told apart on
small trees written to a temporary directory."""

import importlib.util
import os
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
spec = importlib.util.spec_from_file_location(
    "check_cycles", os.path.join(ROOT, "scripts", "check-cycles.py")
)
chk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chk)


def tree(files):
    d = tempfile.mkdtemp()
    for path, text in files.items():
        full = os.path.join(d, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
    return d


class CheckCycles(unittest.TestCase):
    def test_the_proxy_tree_passes(self):
        bad, _notes, n = chk.check(os.path.join(ROOT, "proxy", "src"))
        self.assertEqual(bad, [])
        self.assertGreater(n, 20)

    def test_a_mutual_import_fails_unless_allowed(self):
        d = tree({
            "lib.rs": "pub mod a; pub mod b;",
            "a.rs": "use crate::b::B;\n",
            "b/mod.rs": "pub mod inner;\n",
            "b/inner.rs": "fn f() { crate::a::g(); }\n",
        })
        bad, _, _ = chk.check(d, allowed={}, config_may_import={})
        self.assertEqual(len(bad), 1)
        self.assertIn("cycle: a <-> b", bad[0])
        self.assertIn("b/inner.rs", bad[0])
        bad, notes, _ = chk.check(d, allowed={("b", "a"): "why"}, config_may_import={})
        self.assertEqual(bad, [])
        self.assertTrue(any("allowed: a <-> b: why" in n for n in notes))

    def test_comments_and_grouped_uses(self):
        d = tree({
            "a.rs": "/// see [`crate::b`]\n// crate::b::x\nuse crate::{c::C, d};\n",
            "b.rs": "use crate::a;\n",
            "c.rs": "use crate::a::A;\n",
            "d.rs": "",
        })
        bad, _, _ = chk.check(d, allowed={}, config_may_import={})
        self.assertEqual(len(bad), 1)
        self.assertIn("cycle: a <-> c", bad[0])

    def test_config_must_sit_below_the_modules_it_does_not_list(self):
        d = tree({
            "config/mod.rs": "pub mod security;\n",
            "config/security.rs": "pub jwt: Option<crate::jwt::JwtFile>,\n",
            "jwt.rs": "",
        })
        bad, _, _ = chk.check(d, allowed={}, config_may_import={})
        self.assertEqual(len(bad), 1)
        self.assertIn("layering: ", bad[0])
        self.assertIn("crate::jwt", bad[0])
        bad, _, _ = chk.check(d, allowed={}, config_may_import={"jwt": "why"})
        self.assertEqual(bad, [])


if __name__ == "__main__":
    unittest.main()
