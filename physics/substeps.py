"""The frame kernel: n small XPBD substeps of one iteration each (Macklin et al. 2019), all in numba.

Per substep: predict with gravity, sweep the Neo-Hookean tets, pull anchors and grasps, push vertices out
of instruments, then (per vertex, in parallel) environment contact, velocity update, damping, speed clamp
and a NaN guard. Runs with the GIL released so a room's physics steps beside the network reactor.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from physics.contact import attach_pass, environment_point, instrument_contacts
from physics.kinematics import grasp_targets, interpolate_frames, world_capsules
from physics.neo_hookean import elastic_pass, elastic_pass_serial, serial_twin
from physics.velocity_guard import CLAMPED, RESET, guarded_velocity

# Indices into the counts array the kernel fills.
COUNT_INSTRUMENT_CONTACTS = 0
COUNT_ENVIRONMENT_CONTACTS = 1
COUNT_NONFINITE_RESET = 2
COUNT_SPEED_CLAMPED = 3
N_COUNTS = 4


@nb.njit(inline="always", nogil=True, cache=True)
def predict(x, x_prev, v, inv_mass, i, gx, gy, gz, h):
    """Remember vertex i's position and move it ballistically under gravity (dv = g h)."""
    x_prev[i, 0] = x[i, 0]
    x_prev[i, 1] = x[i, 1]
    x_prev[i, 2] = x[i, 2]
    if inv_mass[i] > 0.0:
        v[i, 0] += gx
        v[i, 1] += gy
        v[i, 2] += gz
        x[i, 0] += v[i, 0] * h
        x[i, 1] += v[i, 1] * h
        x[i, 2] += v[i, 2] * h


def _simulate_frame(
    x, v, inv_mass, mass, damping, gravity, dt, substeps, max_speed,
    corners, W, chunks, chunk_slots, slab_chunks, B, alpha_dev, alpha_hyd, gamma,
    anchor_verts, anchor_weights, anchor_targets, anchor_alpha,
    planes, spheres, boxes, env_mu,
    p0, q0, j0, p1, q1, j1, inst_mu, cap_inst, cap_local, cap_r, cap_active,
    cand_verts, cand_weights, cand_inst,
    g_inst, g_verts, g_weights, g_local, g_alpha,
    out_inst_force, out_anchor_force, out_grasp_force, out_counts,
):  # fmt: skip
    n = x.shape[0]
    h = dt / substeps
    inv_h2 = 1.0 / (h * h)
    force_scale = inv_h2 / substeps
    k_inst = p0.shape[0]
    P = np.empty((k_inst, 3))
    R = np.empty((k_inst, 9))
    jaw = np.empty(k_inst)
    wa = np.empty((cap_inst.size, 3))
    wb = np.empty((cap_inst.size, 3))
    pa = np.empty((cap_inst.size, 3))
    pb = np.empty((cap_inst.size, 3))
    targets = np.empty((g_inst.size, 3))
    x_prev = np.empty_like(x)
    interpolate_frames(p0, q0, j0, p1, q1, j1, 0.0, P, R, jaw)
    world_capsules(cap_inst, cap_local, P, R, jaw, pa, pb)
    damp = np.empty(n)
    for i in range(n):
        damp[i] = 1.0 / (1.0 + damping[i] * h)
    gx, gy, gz = gravity[0] * h, gravity[1] * h, gravity[2] * h
    for i in nb.prange(n):
        # what predict() does for a pinned vertex, spelled out: called for every vertex, this loop took 28 us of a
        # 5k-tet frame (numba's reference counts again, see guarded_velocity), 3 us written so
        if inv_mass[i] == 0.0:
            x_prev[i, 0] = x[i, 0]
            x_prev[i, 1] = x[i, 1]
            x_prev[i, 2] = x[i, 2]
        else:
            predict(x, x_prev, v, inv_mass, i, gx, gy, gz, h)
    for s in range(substeps):
        interpolate_frames(p0, q0, j0, p1, q1, j1, (s + 1.0) / substeps, P, R, jaw)
        world_capsules(cap_inst, cap_local, P, R, jaw, wa, wb)
        grasp_targets(g_inst, g_local, P, R, targets)
        elastic_pass(x, corners, W, chunks, chunk_slots, slab_chunks, B, alpha_dev, alpha_hyd, gamma, inv_h2)
        attach_pass(x, inv_mass, anchor_verts, anchor_weights, anchor_targets, anchor_alpha * inv_h2,
                    force_scale, out_anchor_force)  # fmt: skip
        attach_pass(x, inv_mass, g_verts, g_weights, targets, g_alpha * inv_h2, force_scale, out_grasp_force)
        out_counts[0] += instrument_contacts(
            x, x_prev, inv_mass, mass, cand_verts, cand_weights, cand_inst, cap_inst, cap_r, cap_active,
            wa, wb, pa, pb, inst_mu, force_scale, out_inst_force,
        )  # fmt: skip
        env_hits = 0
        resets = 0
        clamps = 0
        for i in nb.prange(n):
            if inv_mass[i] == 0.0:
                v[i, 0] = 0.0
                v[i, 1] = 0.0
                v[i, 2] = 0.0
                continue  # pinned or orphaned: never moves, so x_prev stays equal to x
            ox, oy, oz = x_prev[i, 0], x_prev[i, 1], x_prev[i, 2]
            hits, px, py, pz = environment_point(x[i, 0], x[i, 1], x[i, 2], ox, oy, oz, planes, spheres, boxes, env_mu)
            env_hits += hits
            x[i, 0] = px
            x[i, 1] = py
            x[i, 2] = pz
            vx = (px - ox) / h * damp[i]
            vy = (py - oy) / h * damp[i]
            vz = (pz - oz) / h * damp[i]
            # guard_velocity, with its stores written out here (see guarded_velocity: numba's refcounts)
            outcome, vx, vy, vz = guarded_velocity(vx, vy, vz, max_speed)
            if outcome == RESET:
                x[i, 0] = x_prev[i, 0]
                x[i, 1] = x_prev[i, 1]
                x[i, 2] = x_prev[i, 2]
                resets += 1
            elif outcome == CLAMPED:
                x[i, 0] = x_prev[i, 0] + vx * h
                x[i, 1] = x_prev[i, 1] + vy * h
                x[i, 2] = x_prev[i, 2] + vz * h
                clamps += 1
            v[i, 0] = vx
            v[i, 1] = vy
            v[i, 2] = vz
            if s + 1 < substeps:  # the next substep's prediction, fused to save a parallel launch
                predict(x, x_prev, v, inv_mass, i, gx, gy, gz, h)
        out_counts[1] += env_hits
        out_counts[2] += resets
        out_counts[3] += clamps
        pa[:, :] = wa
        pb[:, :] = wb


simulate_frame = nb.njit(parallel=True, nogil=True, cache=True)(_simulate_frame)
# For a caller running numba on one thread (a room's thread): the same kernel without parallel launches, each of
# which takes the GIL back (beside a busy reactor, a 4 ms frame then took 40 ms). Same order, same result.
simulate_frame_serial = nb.njit(nogil=True, cache=True)(
    serial_twin(_simulate_frame, "simulate_frame_serial", elastic_pass=elastic_pass_serial)
)
