"""The Wukong controller's API: `Wukong` VMs (vm.novasphere.dev/v1alpha1).

Today: the API types (`api`), the OpenAPI schema generated from them
(`schema`), the CustomResourceDefinition built from that (`crd`) and status
conditions (`conditions`). The reconciler follows in the Wukong controller issue.
"""
