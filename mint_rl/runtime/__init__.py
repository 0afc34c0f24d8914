"""The actor runtime: anyio actors that compose in plain Python, with supervision and back-pressure.

    async with open_system(restart=RestartPolicy(max_restarts=3)) as system:
        learner = await system.spawn(LearnerActor, cfg, name="learner")
        metrics = await learner.train(datums)      # a message; typed as LearnerActor.train
        with anyio.fail_after(5):                   # timeouts are cancel scopes
            await learner.save_state("x")

It knows nothing of RL. Read the modules in this order: `actor` (what an actor is), `handle` (how
a call becomes a message), `system` (where actors live), `supervisor` (what a crash does),
`channel` (bounded queues between actors), `threads` (blocking torch work), `cell` (the
machinery), `ray_backend` (the same actors as Ray actors: `open_system(backend=RayBackend())`).
Imports point one way: actor <- handle <- cell <- system and actor <- ray_backend <- system, with
channel, errors, supervisor and threads below them all, so no module imports one above it (not
even for types).
"""

from mint_rl.runtime.actor import Actor as Actor
from mint_rl.runtime.actor import ActorContext as ActorContext
from mint_rl.runtime.actor import Resources as Resources
from mint_rl.runtime.actor import endpoint as endpoint
from mint_rl.runtime.cell import ActorStats as ActorStats
from mint_rl.runtime.channel import ChannelReceiver as ChannelReceiver
from mint_rl.runtime.channel import ChannelSender as ChannelSender
from mint_rl.runtime.channel import ChannelStats as ChannelStats
from mint_rl.runtime.channel import channel as channel
from mint_rl.runtime.errors import ActorCrashedError as ActorCrashedError
from mint_rl.runtime.errors import ActorError as ActorError
from mint_rl.runtime.errors import ActorSetupError as ActorSetupError
from mint_rl.runtime.errors import ActorStoppedError as ActorStoppedError
from mint_rl.runtime.handle import ActorHandle as ActorHandle
from mint_rl.runtime.handle import actor_name as actor_name
from mint_rl.runtime.ray_backend import RayBackend as RayBackend
from mint_rl.runtime.supervisor import FailureReport as FailureReport
from mint_rl.runtime.supervisor import RestartPolicy as RestartPolicy
from mint_rl.runtime.system import ActorSystem as ActorSystem
from mint_rl.runtime.system import SystemStats as SystemStats
from mint_rl.runtime.system import open_system as open_system
from mint_rl.runtime.threads import DeviceLimiters as DeviceLimiters
from mint_rl.runtime.threads import run_blocking as run_blocking
