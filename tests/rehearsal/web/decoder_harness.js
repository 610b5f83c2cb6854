// The browser half of the decoder conformance tests: replays recorded message bytes through the JS decoder
// and reports what rehearsal.web.sync_trace.decoder_state reports for the Python decoder (same JSON shape).

import { decodeMessage, MessageError } from "/static/js/messages.js";
import { SnapshotDecoder, SnapshotError } from "/static/js/snapshot_decoder.js";

export function unb64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function b64(view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function decoderState(dec) {
  const surface = dec.surface();
  const rigid = {};
  for (const [oid, o] of [...dec.rigid()].sort((a, b) => a[0] - b[0])) {
    const values = new Float64Array([...o.position, ...o.rotation, o.jaw === null ? NaN : o.jaw]);
    rigid[String(oid)] = { kind: o.kind, sequence: o.sequence, values: b64(values) };
  }
  return {
    epoch: dec.epoch,
    ids: b64(Int32Array.from(surface.ids)),
    positions32: b64(surface.positions),
    positions64: b64(dec.surfaceFloat64()),
    received: b64(surface.received),
    grid: b64(dec.surfaceGrid()),
    rigid,
    ack: dec.ackFields(),
    newest: dec.newestSequence,
    predictors: dec.predictors,
    missing_baselines: dec.missingBaselines,
    rejected: dec.rejected,
    held: dec.heldCount,
    triangles: b64(dec.triangles()),
    triangle_rows: b64(dec.triangleRows()),
  };
}

/** One message into the decoder: ["applied", [seq...]] | ["held"] | ["dropped"] | ["rejected", why]. */
export function feed(dec, bytes) {
  const dropped = dec.dropped;
  let type = null;
  try {
    type = decodeMessage(bytes).type;
  } catch (exc) {
    if (!(exc instanceof MessageError)) throw exc;
  }
  try {
    const seqs = dec.onBytes(bytes);
    if (type === "snapshot" && seqs.length === 0) return [dec.dropped > dropped ? "dropped" : "held"];
    return ["applied", seqs];
  } catch (exc) {
    if (exc instanceof SnapshotError) return ["rejected", exc.message];
    throw exc;
  }
}

/** The string rehearsal.web.sync_trace.state_digest hashes. */
function digestText(state) {
  const rigid = Object.entries(state.rigid)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)) // Python sorts the str keys
    .map(([oid, o]) => `${oid},${o.kind},${o.sequence},${o.values}`)
    .join(";");
  const ack = state.ack === null ? null : `${state.ack.newest},${state.ack.bits}`;
  const parts = [
    state.epoch,
    state.newest,
    state.held,
    ack,
    state.predictors.join(","),
    state.missing_baselines,
    state.rejected,
    state.ids,
    state.positions64,
    state.positions32,
    state.grid,
    state.received,
    rigid,
  ];
  return parts.map((p) => (p === null ? "null" : String(p))).join("|");
}

async function sha256(text) {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Replay a client's messages: outcomes, acks and state digests after each message, and the whole state at
 * the checkpoint indices.
 */
export async function replay(client) {
  const dec = new SnapshotDecoder();
  const wanted = new Set(client.checkpoints);
  const outcomes = [];
  const acks = [];
  const texts = [];
  const checkpoints = {};
  client.messages.forEach((text, i) => {
    outcomes.push(feed(dec, unb64(text)));
    acks.push(dec.ackFields());
    const state = decoderState(dec);
    texts.push(digestText(state));
    if (wanted.has(i)) checkpoints[i] = state;
  });
  const digests = await Promise.all(texts.map(sha256));
  return { outcomes, acks, digests, checkpoints };
}

/**
 * After replaying `prefix` (base64 messages), feed each candidate to the decoder: its outcome, the state after
 * it and whether it left the state as it was (counters aside). After a candidate that changed the state the
 * decoder is rebuilt from the prefix, so each starts from the same state.
 */
export function probe(prefix, candidates) {
  const fresh = () => {
    const dec = new SnapshotDecoder();
    for (const text of prefix) feed(dec, unb64(text));
    return dec;
  };
  let dec = fresh();
  const before = core(decoderState(dec));
  return candidates.map((text) => {
    const outcome = feed(dec, unb64(text));
    const state = decoderState(dec);
    const unchanged = core(state) === before;
    if (!unchanged) dec = fresh();
    return { outcome, state, unchanged };
  });
}

/** A state without the counters a rejection moves (rejected, missing_baselines), as a string. */
export function core(state) {
  const { rejected, missing_baselines, ...rest } = state;
  return JSON.stringify(rest);
}

/** After replaying `prefix`, feed the candidates one after another: each one's outcome and the state after it. */
export function sequence(prefix, candidates) {
  const dec = new SnapshotDecoder();
  for (const text of prefix) feed(dec, unb64(text));
  return candidates.map((text) => ({ outcome: feed(dec, unb64(text)), state: decoderState(dec) }));
}
