"""The actor runtime: anyio actors that compose in plain Python, with supervision and back-pressure.

It knows nothing of RL. Read the modules in this order: `actor` (what an actor is), `handle` (how
to talk to one), `system` (where actors live), `supervisor` (what a crash does), `channel` and
`pipeline` (wiring actors together), `threads` (blocking torch work), `cell` (the machinery).
"""

from mint_rl.runtime.actor import Actor as Actor
from mint_rl.runtime.actor import ActorContext as ActorContext
from mint_rl.runtime.actor import EndpointSpec as EndpointSpec
from mint_rl.runtime.actor import endpoint as endpoint
from mint_rl.runtime.cell import ActorStats as ActorStats
from mint_rl.runtime.channel import ChannelReceiver as ChannelReceiver
from mint_rl.runtime.channel import ChannelSender as ChannelSender
from mint_rl.runtime.channel import ChannelStats as ChannelStats
from mint_rl.runtime.channel import channel as channel
from mint_rl.runtime.errors import ActorCallTimeout as ActorCallTimeout
from mint_rl.runtime.errors import ActorCrashedError as ActorCrashedError
from mint_rl.runtime.errors import ActorError as ActorError
from mint_rl.runtime.errors import ActorSetupError as ActorSetupError
from mint_rl.runtime.errors import ActorStoppedError as ActorStoppedError
from mint_rl.runtime.errors import MessageNotPicklableError as MessageNotPicklableError
from mint_rl.runtime.handle import ActorHandle as ActorHandle
from mint_rl.runtime.handle import ActorRef as ActorRef
from mint_rl.runtime.pipeline import Pipeline as Pipeline
from mint_rl.runtime.supervisor import FailureReport as FailureReport
from mint_rl.runtime.supervisor import RestartPolicy as RestartPolicy
from mint_rl.runtime.system import ActorSystem as ActorSystem
from mint_rl.runtime.system import SystemStats as SystemStats
from mint_rl.runtime.system import open_system as open_system
from mint_rl.runtime.threads import DeviceLimiters as DeviceLimiters
from mint_rl.runtime.threads import run_blocking as run_blocking
