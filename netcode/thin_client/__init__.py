"""Python reference thin client (see CLIENT.md): clock sync, interpolation, redundant inputs, prediction.

Works on plain data (numpy arrays, small dataclasses); never opens a socket or reads a clock itself.
"""

from netcode.protocol.inputs import InputAck, InputReceiver, InputSample
from netcode.protocol.poses import RigidPose
from netcode.protocol.response_model import ResponseModel
from netcode.protocol.schema import THIN_CLIENT_REGISTRY, register_thin_client_types
from netcode.thin_client.client import ThinClient, ThinClientConfig
from netcode.thin_client.clock_sync import ClockSync, ClockSyncConfig
from netcode.thin_client.input_sender import InputSender, InputSenderConfig
from netcode.thin_client.interpolation import AdaptiveDelay, BufferConfig, DelayConfig, InterpolationBuffer
from netcode.thin_client.prediction import HeldTissue, Reconciler
from netcode.thin_client.render_state import ObjectKind, RenderObject, RenderState, SnapshotObject, Source

__all__ = [
    "THIN_CLIENT_REGISTRY",
    "AdaptiveDelay",
    "BufferConfig",
    "ClockSync",
    "ClockSyncConfig",
    "DelayConfig",
    "HeldTissue",
    "InputAck",
    "InputReceiver",
    "InputSample",
    "InputSender",
    "InputSenderConfig",
    "InterpolationBuffer",
    "ObjectKind",
    "Reconciler",
    "RenderObject",
    "RenderState",
    "ResponseModel",
    "RigidPose",
    "SnapshotObject",
    "Source",
    "ThinClient",
    "ThinClientConfig",
    "register_thin_client_types",
]
