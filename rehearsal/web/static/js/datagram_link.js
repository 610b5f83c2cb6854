// WebTransport datagrams beside the page's WebSocket: the unreliable messages (snapshots, input acks, forces; from
// this page its inputs and snapshot acks), without TCP's head-of-line blocking under loss.
//
// The server offers a session in its `joined` answer: webtransport = {port, path, cert_sha256} (a single-use path
// naming this page's link; a self-signed certificate accepted by its SHA-256: serverCertificateHashes). Each
// datagram is a kind byte and then: 0x00 a whole message; 0x01 u16 seq, u8 index, u8 count and a part of a larger
// server message (all parts or nothing). See rehearsal/web/webtransport.py. When the browser has no WebTransport,
// or the session fails or closes, the page keeps using its WebSocket for everything.

import { decodeMessage } from './messages.js';

const MAX_PARTIAL = 8; // messages being reassembled at once (older ones are lost datagrams: dropped)
const MAX_QUEUED = 64; // datagrams waiting in the browser's send queue before we drop ours (as a lossy link would)
const OPEN_TIMEOUT_MS = 5000;

function hexBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Reassembles fragmented server messages (pure: tested on its own). `push(bytes)` returns a whole message's
 * bytes, or null while parts are missing; malformed datagrams throw. */
export class Reassembler {
  constructor(maxPartial = MAX_PARTIAL) {
    this.maxPartial = maxPartial;
    this.partial = new Map(); // seq -> {count, parts: Array, have}
    this.dropped = 0;
  }

  push(data) {
    if (data.length < 1) throw new Error('empty datagram');
    if (data[0] === 0x00) return data.subarray(1);
    if (data[0] !== 0x01 || data.length < 6) throw new Error(`datagram kind ${data[0]} or length ${data.length}`);
    const seq = (data[1] << 8) | data[2];
    const index = data[3];
    const count = data[4];
    if (count < 2 || index >= count) throw new Error(`fragment ${index} of ${count}`);
    let entry = this.partial.get(seq);
    if (!entry) {
      if (this.partial.size >= this.maxPartial) {
        this.partial.delete(this.partial.keys().next().value); // the oldest: a part of it was lost
        this.dropped += 1;
      }
      entry = { count, parts: new Array(count), have: 0 };
      this.partial.set(seq, entry);
    }
    if (entry.count !== count) throw new Error(`fragment count ${count} != ${entry.count}`);
    if (!entry.parts[index]) {
      entry.parts[index] = data.subarray(5);
      entry.have += 1;
    }
    if (entry.have < count) return null;
    this.partial.delete(seq);
    const size = entry.parts.reduce((n, p) => n + p.length, 0);
    const whole = new Uint8Array(size);
    let at = 0;
    for (const part of entry.parts) {
      whole.set(part, at);
      at += part.length;
    }
    return whole;
  }
}

export function webTransportAvailable() {
  return typeof WebTransport === 'function';
}

export class DatagramLink {
  /** `offer` from the joined answer; `onMessage(type, fields)`; `onState(text)` on open and close. */
  constructor(offer, { onMessage, onState, onError }) {
    this.offer = offer;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.onError = onError || (() => {});
    this.transport = null;
    this.writer = null;
    this.open = false;
    this.closed = false;
    this.reassembler = new Reassembler();
    this.datagramsIn = 0;
    this.datagramsOut = 0;
    this.sendDropped = 0;
  }

  url(port) {
    const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
    return `https://${host}:${port || this.offer.port}${this.offer.path}`;
  }

  /** Open the session (`port` overrides the offer's, e.g. to reach it through a relay); resolves true when open. */
  async connect(port) {
    let transport;
    try {
      transport = new WebTransport(this.url(port), {
        serverCertificateHashes: [{ algorithm: 'sha-256', value: hexBytes(this.offer.cert_sha256) }],
      });
    } catch (err) {
      this.onState(`webtransport unavailable: ${err && err.message}`);
      return false;
    }
    this.transport = transport;
    transport.closed.catch(() => {}); // a session that fails rejects both promises: handled here and below
    const timeout = new Promise((resolve) => setTimeout(() => resolve('no answer'), OPEN_TIMEOUT_MS));
    const ready = transport.ready.then(() => 'ready', (err) => String((err && err.message) || err));
    const result = await Promise.race([ready, timeout]);
    if (result !== 'ready') {
      this.close();
      this.onState(`webtransport failed: ${result}`);
      return false;
    }
    if (this.closed) return false;
    this.writer = transport.datagrams.writable.getWriter();
    this.open = true;
    this.onState('webtransport');
    transport.closed.then(() => this._ended('closed'), (err) => this._ended(err && err.message));
    this._readLoop(transport.datagrams.readable.getReader());
    return true;
  }

  async _readLoop(reader) {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        return;
      }
      if (chunk.done) return;
      this.datagramsIn += 1;
      let message;
      try {
        const whole = this.reassembler.push(chunk.value);
        if (!whole) continue;
        message = decodeMessage(whole);
      } catch (err) {
        this.onError(`webtransport datagram: ${err && err.message}`);
        continue;
      }
      this.onMessage(message.type, message.fields);
    }
  }

  /** Send one encoded message as a datagram; false when not open (the caller sends it on the WebSocket). */
  send(bytes) {
    if (!this.open || !this.writer) return false;
    if (this.writer.desiredSize !== null && this.writer.desiredSize < -MAX_QUEUED) {
      this.sendDropped += 1;
      return true; // the browser's queue is full: lost, as a datagram would be
    }
    const data = new Uint8Array(bytes.length + 1);
    data.set(bytes, 1);
    this.writer.write(data).catch(() => {});
    this.datagramsOut += 1;
    return true;
  }

  _ended(why) {
    if (!this.open) return;
    this.open = false;
    this.writer = null;
    if (!this.closed) this.onState(`websocket (webtransport ${why || 'closed'})`);
  }

  close() {
    this.closed = true;
    this.open = false;
    this.writer = null;
    if (this.transport) {
      try { this.transport.close(); } catch (err) { /* already closed */ }
      this.transport = null;
    }
  }
}
