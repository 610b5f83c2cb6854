"""What the rehearsal server and its clients say to each other above the netcode channels.

``REHEARSAL_REGISTRY`` = ``netcode.messaging.messages.DEFAULT_REGISTRY`` + the state-sync types
(``netcode.sync.snapshot_messages``: snap_config, snap_topology, snap_predictor, snapshot, snap_ack, snap_resync) +
the thin client's (``netcode.protocol.schema``: input, input_ack, grasp, release) + these:

* ``welcome`` (reliable, server->client, once joined): session, scenario, participant, role, name,
  state (the room's lifecycle), hands: {hand: snapshot object id of the instrument it drives}, progress:
  {steps: [{id, title, kind, status, value, time?}], current_step, complications: {active, bleeding}},
  annotations: the newest annotations [{by, position, text}] (late joiners see what is already there).
  Right after it the joiner alone gets the ``event`` ``roster`` (detail: participants, the others connected
  [{participant, role, name, objects: {left|right|head: snapshot object id}}]; complications, the scenario's
  [{id, title, kind}]: what a mentor may inject).
* ``command`` (reliable, client->server): action (a ``rehearsal.roles.Action`` value), args: map
  (optional), id: int (optional, echoed in a refusal).
* ``event`` (reliable, server->client): kind, server_time; session_time (simulated seconds since the room
  was created: the clock a mentor's event list and the debrief show), by (participant id), instrument
  (snapshot object id), detail: map (all optional).
* ``surface_damage`` (reliable, server->client): burn levels of surface vertices, sent to the whole room after
  a frame that changed one (never per tick otherwise) and, right after the state-sync join messages, all of
  them to a newcomer. vertices: mesh vertex ids (the ids of ``snap_topology``'s patches; little-endian uint32,
  ascending, at most ``MAX_DAMAGE_VERTICES`` = 4096 per message, more in further messages), levels: one byte
  per vertex, 0 fresh .. 255 burned through (the highest cautery damage of the live tets around the vertex:
  ``rehearsal.surface_damage``), reset: forget every level held before applying these. A vertex keeps its
  level until a message changes it, across topology epochs (a cut or burn keeps the vertex ids).
* ``forces`` (unreliable, server->client, every snapshot tick): the force tissue exerts on each instrument and
  its grasp pull, 0.01 N i16 per component, with the instrument's position (``netcode.protocol.forces``). Each
  participant gets its own instruments, each mentor the whole room's (at most ``MAX_FORCE_INSTRUMENTS`` per
  message, more in further messages of the same tick); observers see the magnitudes in ``room_health``.
* ``fixtures`` (reliable, server->client): the room's virtual fixtures (forbidden regions, no-energy zones,
  guides), their shapes and on/off state (``netcode.protocol.fixtures``), to a newcomer right after ``welcome``
  and to the whole room after every ``toggle_fixture``; each replaces the set held before. Only in a scenario
  with ``[[fixtures]]``.
* ``refused`` (reliable, server->client): request (``connect``, ``input``, ``command:<action>``,
  ``message:<type>``), reason (for a person), id (the command's, if it had one).

Events: an accepted command is broadcast to the room with ``kind`` = the action (``pause``, ``resume``,
``reset``, ``end_room``, ``inject_complication``, ``annotate``, ``hand_instrument``,
``take_over_instrument``, ``hold_retractor``, ``remove_participant``) and its arguments plus the room
``state`` in ``detail`` (and ``object``: the snapshot object id of an instrument it put in someone's hand).
Command arguments (each bounded, ``COMMAND_ARGS``: others, or longer ones, are refused before the command
runs): ``annotate`` {kind: marker (kept, in ``welcome``) | pointer (with ``direction``, not
kept) | clear, position: [x, y, z], text (<= 200 characters)}; ``hand_instrument`` {to: participant, hand, kind};
``take_over_instrument`` / ``hold_retractor`` {hand, release: bool}; ``inject_complication``
{complication}; ``remove_participant`` {who}; ``toggle_fixture`` {fixture: id, active: bool} (mentors only);
the room's own changes are ``started`` (lobby -> running), ``joined`` / ``left`` (detail: participant,
role, name, objects: {left|right|head: snapshot object id}) and ``ended``; once a second the room's mentors and
observers get ``room_health`` (detail: participants [{participant, transport, rtt, loss, snapshot_age, forces:
{hand: newtons}}], skills {participant: {passed, errors_passed, hands: {hand: {passed, metrics}}}});
physics events are ``grasp``, ``release``, ``tear``, ``cut`` and ``burn``
with the instrument's snapshot object id (instrument ids start at 32768, so they never equal a tissue
patch id; tracked headsets are HEAD rigid objects from 49152 on). The surgeon whose instrument grasps also
gets a ``grasp`` message (the grasp's response model, measured by the physics engine:
``rehearsal.response_model``) and, when it lets go or tears, ``release``.
The scenario's progress: ``step_completed`` /
``step_violated`` (detail: the step as in ``welcome``'s progress; a violation names the instrument),
``complication_started`` (detail: complication, kind, title, and for a bleeding point its vertex and
position), ``complication_failed`` (complication, reason), ``bleeding_stopped`` (complication, lost_ml)
and ``world_reset`` (after a reset took effect; a new full ``snap_topology`` precedes it).
Virtual fixtures (``rehearsal.fixtures``): ``fixture_violation`` (a tip was stopped entering a forbidden region;
detail: fixture, hand) and ``energy_cut`` (a pressed pedal ignored inside a no-energy zone; detail: fixture,
hand), each with the instrument's snapshot object id, once per entry.

Input devices (the thin client's device ids in ``input`` packets): ``DEVICE_HEAD`` (0) is the headset,
``DEVICE_LEFT`` (1) and ``DEVICE_RIGHT`` (2) are the instruments in the left and right hand. Rotations on
the wire are (x, y, z, w); the physics engine's are (w, x, y, z): ``to_physics_quat``/``to_wire_quat``.
"""

from __future__ import annotations

import numpy as np

from netcode.messaging.messages import Field, MessageRegistry
from netcode.protocol.fixtures import register_fixture_types
from netcode.protocol.forces import register_force_types
from netcode.protocol.schema import register_thin_client_types
from netcode.sync.snapshot_messages import SNAPSHOT_REGISTRY
from rehearsal.surface_damage import MAX_DAMAGE_VERTICES

DEVICE_HEAD = 0
DEVICE_LEFT = 1
DEVICE_RIGHT = 2
HAND_OF_DEVICE = {DEVICE_LEFT: "left", DEVICE_RIGHT: "right"}
DEVICE_OF_HAND = {hand: device for device, hand in HAND_OF_DEVICE.items()}


def build_registry() -> MessageRegistry:
    registry = register_thin_client_types(SNAPSHOT_REGISTRY.copy())
    registry.register(
        "welcome",
        Field("session", "str", max_length=64),
        Field("scenario", "str", max_length=64),
        Field("participant", "int"),
        Field("role", "str", max_length=32),
        Field("name", "str", max_length=64),
        Field("state", "str", max_length=16),
        Field("hands", "map", required=False, max_length=2),
        Field("progress", "map", required=False, max_length=8),
        Field("annotations", "list", required=False, max_length=64),
        doc="Sent once a connection has joined its room: who you are, and your instruments' object ids.",
    )
    registry.register(
        "command",
        Field("action", "str", max_length=32),
        Field("args", "map", required=False, max_length=8),
        Field("id", "int", required=False),
        doc="A mentor or nurse request (rehearsal.roles.Action); refused or broadcast as an event.",
    )
    registry.register(
        "event",
        Field("kind", "str", max_length=32),
        Field("server_time", "float"),
        Field("session_time", "float", required=False),
        Field("by", "int", required=False),
        Field("instrument", "int", required=False),
        Field("detail", "map", required=False, max_length=32),
        doc="Something every participant of the room sees (commands, lifecycle, people, physics).",
    )
    registry.register(
        "surface_damage",
        Field("vertices", "bytes", max_length=4 * MAX_DAMAGE_VERTICES),
        Field("levels", "bytes", max_length=MAX_DAMAGE_VERTICES),
        Field("reset", "bool"),
        doc="Burn levels (0..255) of surface vertices whose level changed (all of them to a newcomer).",
    )
    registry.register(
        "refused",
        Field("request", "str", max_length=64),
        Field("reason", "str", max_length=256),
        Field("id", "int", required=False),
        doc="A request that changed nothing, and why.",
    )
    return register_fixture_types(register_force_types(registry))


REHEARSAL_REGISTRY = build_registry()

MAX_ANNOTATION_TEXT = 200  # characters of a marker's or pointer's text
_HAND = Field("hand", "str", required=False, max_length=8)
_VEC3 = {"kind": "list", "required": False, "items": "float", "min_length": 3, "max_length": 3}


def build_command_args() -> MessageRegistry:
    """The arguments of every command, one message type per action (``rehearsal.roles.Action`` values), each
    field bounded: an argument that is missing from here, too long, of the wrong kind or not finite is refused
    before the command runs, so an accepted command's ``event`` (its arguments in ``detail``) stays far under
    the encoder's limit. Pause, resume, reset and end_room take none."""
    args = MessageRegistry(max_encoded_size=4096)
    for action in ("pause", "resume", "reset", "end_room"):
        args.register(action)
    args.register(
        "annotate",
        Field("kind", "str", required=False, max_length=16),
        Field("position", **_VEC3),
        Field("direction", **_VEC3),
        Field("text", "str", required=False, max_length=MAX_ANNOTATION_TEXT),
    )
    args.register(
        "hand_instrument",
        Field("to", "int", required=False),
        _HAND,
        Field("kind", "str", required=False, max_length=32),
    )
    args.register("take_over_instrument", _HAND, Field("release", "bool", required=False))
    args.register("hold_retractor", _HAND, Field("release", "bool", required=False))
    args.register("inject_complication", Field("complication", "str", required=False, max_length=64))
    args.register("remove_participant", Field("who", "int", required=False))
    args.register(
        "toggle_fixture",
        Field("fixture", "str", required=False, max_length=64),
        Field("active", "bool", required=False),
    )
    return args


COMMAND_ARGS = build_command_args()


def to_physics_quat(q_xyzw: np.ndarray) -> np.ndarray:
    """(x, y, z, w) -> (w, x, y, z), of one quaternion or of each row of an (n, 4) array."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    return q[..., [3, 0, 1, 2]]


def to_wire_quat(q_wxyz: np.ndarray) -> np.ndarray:
    """(w, x, y, z) -> (x, y, z, w), of one quaternion or of each row of an (n, 4) array."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    return q[..., [1, 2, 3, 0]]


def plain(value: object, depth: int = 0) -> object:
    """numpy scalars/arrays and tuples as msgpack's plain types (for event details)."""
    if depth > 8:
        return None
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), depth + 1)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    return str(value)
