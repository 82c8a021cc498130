#!/usr/bin/env python3
"""Tests of scripts/check-cycles.py (`make lint` runs them): the proxy's tree passes, and a
mutual import, a longer loop (a strongly connected component of three modules), an import of
`config` above itself, and an allowed cycle are told apart on small trees written to a
temporary directory."""

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
        self.assertTrue(any("allowed: cycle a, b: why" in n for n in notes))

    def test_a_longer_loop_fails_without_any_mutual_pair(self):
        d = tree({
            "lib.rs": "pub mod a; pub mod b; pub mod c; pub mod d;",
            "a.rs": "use crate::b::B;\nuse crate::d;\n",
            "b.rs": "pub use crate::c::C;\n",
            "c/mod.rs": "pub mod deep;\n",
            "c/deep.rs": "fn f() { crate::a::g(); }\n",
            "d.rs": "",
        })
        bad, _, _ = chk.check(d, allowed={}, config_may_import={})
        self.assertEqual(len(bad), 1, bad)
        self.assertIn("cycle: 3 modules reach each other (a, b, c)", bad[0])
        self.assertIn("a -> b -> c -> a", bad[0])
        self.assertIn("c/deep.rs imports crate::a", bad[0])
        self.assertNotIn("d", bad[0].split("(")[1].split(")")[0])
        # Only the exact set of the component is allowed, not a part of it.
        bad, _, _ = chk.check(d, allowed={("a", "b"): "why"}, config_may_import={})
        self.assertEqual(len(bad), 1)
        bad, notes, _ = chk.check(d, allowed={("c", "a", "b"): "why"}, config_may_import={})
        self.assertEqual(bad, [])
        self.assertTrue(any("allowed: cycle a, b, c: why" in n for n in notes))
        self.assertTrue(any("note: a, b no longer a cycle" in n for n in
                            chk.check(d, allowed={("a", "b"): "x", ("a", "b", "c"): "y"},
                                      config_may_import={})[1]))

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
