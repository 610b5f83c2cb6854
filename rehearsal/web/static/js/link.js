// The page's live link to the rehearsal server: a WebSocket to /ws, a join, then one message per binary frame.
//
// The first frame is a text join ({"join": {invite, name}} or {"rejoin": {rejoin_code}}); the server answers a
// text {"joined": {...}} and then binary frames, each one message of the rehearsal registry (msgpack, decoded
// by messages.js), or refuses with a binary `refused` (request "connect") and closes. See rehearsal/web/websocket.py.
//
// When the joined answer offers WebTransport (a participant's page, on a server that runs it) and the browser has
// it, the unreliable messages go as datagrams too (datagram_link.js): the server's snapshots, input acks and
// forces arrive there, and this page's inputs and snapshot acks leave there; the rest stays on the WebSocket,
// which also carries everything when the session cannot open or closes.

import { DatagramLink, webTransportAvailable } from './datagram_link.js';
import { decodeMessage, encodeMessage } from './messages.js';

const DATAGRAM_TYPES = new Set(['input', 'snap_ack']); // what this page sends unreliably

const MAX_PAGE_ERRORS = 20; // reports a page sends in its life (the server counts and logs them)

export class RoomLink {
  constructor({ onJoined, onMessage, onClosed, onTransport }) {
    this.onJoined = onJoined;
    this.onMessage = onMessage;
    this.onClosed = onClosed;
    this.onTransport = onTransport || (() => {});
    this.useWebTransport = true; // false: the WebSocket only (?transport=websocket)
    this.webTransportPort = null; // the offer's port unless set (?wt_port=N: e.g. through a relay)
    this.datagrams = null;
    this.transportName = 'websocket';
    this.socket = null;
    this.joined = null;
    this.refusal = null;
    this.pageErrors = 0;
    this.bytesIn = 0;
    this.framesIn = 0;
    this.badFrames = 0;
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/ws`;
  }

  /** Open the socket and send the join (`join` = {invite, name} or {rejoin_code}). */
  connect(join) {
    this.close();
    this.refusal = null;
    this.joined = null;
    const socket = new WebSocket(this.url());
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => {
      const body = join.rejoin_code ? { rejoin: { rejoin_code: join.rejoin_code } } : { join };
      socket.send(JSON.stringify(body));
    };
    socket.onmessage = (event) => this._frame(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.datagrams) {
        this.datagrams.close();
        this.datagrams = null;
        this.transportName = 'websocket';
      }
      const wasJoined = this.joined !== null;
      this.onClosed({ code: event.code, reason: event.reason, refusal: this.refusal, wasJoined });
    };
  }

  _frame(data) {
    if (typeof data === 'string') {
      let body = null;
      try { body = JSON.parse(data); } catch (err) { body = null; }
      if (body && body.joined) {
        this.joined = body.joined;
        this.onJoined(body.joined);
        if (body.joined.webtransport && this.useWebTransport && webTransportAvailable()) {
          this._openDatagrams(body.joined.webtransport);
        }
      }
      return;
    }
    this.framesIn += 1;
    this.bytesIn += data.byteLength;
    let message;
    try {
      message = decodeMessage(new Uint8Array(data));
    } catch (err) {
      this.badFrames += 1;
      this.reportError(`undecodable message from the server: ${err && err.message}`);
      return;
    }
    if (message.type === 'refused' && message.fields.request === 'connect') this.refusal = message.fields.reason;
    this.onMessage(message.type, message.fields);
  }

  _openDatagrams(offer) {
    const socket = this.socket;
    const datagrams = new DatagramLink(offer, {
      onMessage: (type, fields) => {
        this.framesIn += 1;
        this.onMessage(type, fields);
      },
      onError: (text) => {
        this.badFrames += 1;
        this.reportError(text);
      },
      onState: (text) => {
        if (this.datagrams !== datagrams) return;
        this.transportName = datagrams.open ? 'webtransport' : 'websocket';
        this.onTransport(text);
      },
    });
    this.datagrams = datagrams;
    datagrams.connect(this.webTransportPort).then((ok) => {
      if (!ok && this.datagrams === datagrams) this.datagrams = null;
      if (this.socket !== socket) datagrams.close();
    });
  }

  /** True while unreliable messages travel as datagrams (lossy: the page must ack its snapshots). */
  get lossy() {
    return Boolean(this.datagrams && this.datagrams.open);
  }

  /** Send one message (type + fields): unreliable ones as a datagram when open, else one binary frame; false when
   * not connected. */
  send(type, fields) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || this.joined === null) return false;
    const bytes = encodeMessage(type, fields);
    if (DATAGRAM_TYPES.has(type) && this.datagrams && this.datagrams.send(bytes)) return true;
    socket.send(bytes);
    return true;
  }

  /** Tell the server about an error in this page (counted there as a page error), a bounded number of times. */
  reportError(text) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || this.joined === null) return;
    if (this.pageErrors >= MAX_PAGE_ERRORS) return;
    this.pageErrors += 1;
    socket.send(JSON.stringify({ page_error: String(text).slice(0, 300) }));
  }

  close() {
    if (this.datagrams) {
      this.datagrams.close();
      this.datagrams = null;
      this.transportName = 'websocket';
    }
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, 'page closed');
    }
  }
}
