"""The RDS service of the control plane: DB proxies, their targets and endpoints, DB instances
and DB subnet groups.

`Rds` is the service object the server dispatches to (method name = operation
name). Each method is a one-line hand-off to the module for its resource
(`rds_proxies`, `rds_targets`, `rds_endpoints`, `rds_instances`, `rds_managed`,
`rds_subnet_groups`, `rds_events`, `rds_tags`),
which keeps every module small and lets the data-plane runtime import the
document helpers without the dispatch class. The documents these operations
write are the contract with the runtime; `rds_common` names their kinds.
"""

from __future__ import annotations

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.services import (
    rds_endpoints,
    rds_events,
    rds_instances,
    rds_managed,
    rds_proxies,
    rds_subnet_groups,
    rds_tags,
    rds_targets,
)
from sluice.control.services.rds_instances import adopt_instance, forget_instance

__all__ = ["Rds", "adopt_instance", "forget_instance"]


class Rds:
    """The RDS operations Sluice answers (DB proxies, DB instances, DB subnet groups)."""

    name = "rds"

    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    # DB proxies
    def CreateDBProxy(self, call: Call, params: Params) -> Output:
        return rds_proxies.create(self.plane, call, params)

    def DescribeDBProxies(self, call: Call, params: Params) -> Output:
        return rds_proxies.describe(self.plane, call, params)

    def ModifyDBProxy(self, call: Call, params: Params) -> Output:
        return rds_proxies.modify(self.plane, call, params)

    def DeleteDBProxy(self, call: Call, params: Params) -> Output:
        return rds_proxies.delete(self.plane, call, params)

    # Target groups and targets
    def RegisterDBProxyTargets(self, call: Call, params: Params) -> Output:
        return rds_targets.register(self.plane, call, params)

    def DeregisterDBProxyTargets(self, call: Call, params: Params) -> Output:
        return rds_targets.deregister(self.plane, call, params)

    def DescribeDBProxyTargets(self, call: Call, params: Params) -> Output:
        return rds_targets.describe_targets(self.plane, call, params)

    def DescribeDBProxyTargetGroups(self, call: Call, params: Params) -> Output:
        return rds_targets.describe_groups(self.plane, call, params)

    def ModifyDBProxyTargetGroup(self, call: Call, params: Params) -> Output:
        return rds_targets.modify_group(self.plane, call, params)

    # Proxy endpoints
    def CreateDBProxyEndpoint(self, call: Call, params: Params) -> Output:
        return rds_endpoints.create(self.plane, call, params)

    def DescribeDBProxyEndpoints(self, call: Call, params: Params) -> Output:
        return rds_endpoints.describe(self.plane, call, params)

    def ModifyDBProxyEndpoint(self, call: Call, params: Params) -> Output:
        return rds_endpoints.modify(self.plane, call, params)

    def DeleteDBProxyEndpoint(self, call: Call, params: Params) -> Output:
        return rds_endpoints.delete(self.plane, call, params)

    # DB instances (created here and run by Sluice, or adopted through `adopt_instance`)
    def CreateDBInstance(self, call: Call, params: Params) -> Output:
        return rds_managed.create(self.plane, call, params)

    def DescribeDBInstances(self, call: Call, params: Params) -> Output:
        return rds_instances.describe(self.plane, call, params)

    def ModifyDBInstance(self, call: Call, params: Params) -> Output:
        return rds_managed.modify(self.plane, call, params)

    def RebootDBInstance(self, call: Call, params: Params) -> Output:
        return rds_managed.reboot(self.plane, call, params)

    def StopDBInstance(self, call: Call, params: Params) -> Output:
        return rds_managed.stop(self.plane, call, params)

    def StartDBInstance(self, call: Call, params: Params) -> Output:
        return rds_managed.start(self.plane, call, params)

    def DeleteDBInstance(self, call: Call, params: Params) -> Output:
        return rds_managed.delete(self.plane, call, params)

    def DescribeEvents(self, call: Call, params: Params) -> Output:
        return rds_events.describe(self.plane, call, params)

    # DB subnet groups
    def CreateDBSubnetGroup(self, call: Call, params: Params) -> Output:
        return rds_subnet_groups.create(self.plane, call, params)

    def DescribeDBSubnetGroups(self, call: Call, params: Params) -> Output:
        return rds_subnet_groups.describe(self.plane, call, params)

    def DeleteDBSubnetGroup(self, call: Call, params: Params) -> Output:
        return rds_subnet_groups.delete(self.plane, call, params)

    # Tags
    def AddTagsToResource(self, call: Call, params: Params) -> Output:
        return rds_tags.add(self.plane, call, params)

    def ListTagsForResource(self, call: Call, params: Params) -> Output:
        return rds_tags.list_(self.plane, call, params)

    def RemoveTagsFromResource(self, call: Call, params: Params) -> Output:
        return rds_tags.remove(self.plane, call, params)
