"""Deployment artefacts generated from the code: the Helm chart's generated files.

`chart.generated_files()` renders what the chart must not hand-copy (the CRD,
the RBAC rules, the alert rules, the dashboards) from the same sources the
operator and `dashboards/` use; `wukong deploy render` writes them and the
plain-manifest bundle. Tests fail when the committed copies are stale.
"""
