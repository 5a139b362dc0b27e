"""Policy is Cedar: who may use which tool, with which params, through which agent.

The schema is generated from the tool catalog (:mod:`.schema`); policies are
validated against it when they load (:mod:`.compiled`); a decision is one
evaluation of the policies that can match the tool and the caller (:mod:`.evaluate`,
:mod:`.selection`, :mod:`.prepared`), read together with the permitting policies'
annotations (:mod:`.annotations`). The
retired TOML format is read only by the converter (:mod:`.convert`).
"""

from mcp_handshake.services.policy.annotations import ConfirmationRules
from mcp_handshake.services.policy.compiled import PolicyError
from mcp_handshake.services.policy.engine import Policy, load_policy
from mcp_handshake.services.policy.evaluate import Agent, Phase

__all__ = ["Agent", "ConfirmationRules", "Phase", "Policy", "PolicyError", "load_policy"]
