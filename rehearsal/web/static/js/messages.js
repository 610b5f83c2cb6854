// The message envelope of netcode/messaging/MESSAGES.md section 4, byte-compatible with Python's
// netcode.messaging.messages.MessageRegistry: one msgpack map {"v": 1, "t": "<type>", <field>: <value>, ...}.
//
// API:
//   decodeMessage(bytes: Uint8Array, registry = REHEARSAL_REGISTRY) -> {type, fields}
//   encodeMessage(type, fields, registry = REHEARSAL_REGISTRY) -> Uint8Array
//   class MessageError extends Error                  every failure of either, with a readable text
//   class MessageRegistry                             register(name, fields), copy(), has(name), types(),
//                                                     validate(type, fields), encode(type, fields), decode(bytes),
//                                                     static fromSchema(schema) (see below)
//   DEFAULT_REGISTRY (disconnect, ping, pong), SNAPSHOT_REGISTRY (+ the state-sync types of SNAPSHOT.md),
//   REHEARSAL_REGISTRY (+ the thin client's and the rehearsal server's: rehearsal.wire.REHEARSAL_REGISTRY)
//
// One WebSocket binary frame carries exactly one encoded message.
//
// decode validates like Python's: wrong version, unknown type, missing, unknown or wrongly typed fields,
// oversized input (> 256 KiB) or strings, malformed msgpack, extension types, nesting deeper than 16
// levels, non-string map keys and trailing bytes all throw MessageError, and nothing else escapes it.
// Decoded values: int -> Number (BigInt beyond 2^53), float -> Number, str -> string, bytes -> Uint8Array
// (a copy), bool, nil -> null (an absent or nil optional field is left out), list -> Array, map -> plain
// object. encode writes the bytes Python's msgpack.Packer(use_bin_type=True) writes for the same values:
// smallest int formats, float64 for every float-kind field and float list item (also when its value is an
// integer, as Python's validation makes it a float), str8/bin8 as needed, keys v, t, then the fields in
// schema order. JavaScript has one number type, so inside "list" (without items), "map" and "any" values
// an integer-valued number is encoded as an int (Python would keep a float 2.0 a float).
//
// fromSchema takes what Python's registry holds, e.g. the server can send
//   [{"name": t.name, "fields": [{"name", "kind", "required", "max_length", "items"}...]} for t in registry.types()]
// to check or replace the built-in REHEARSAL_REGISTRY.

export const SCHEMA_VERSION = 1;
export const DEFAULT_MAX_ENCODED_SIZE = 256 * 1024;
export const MAX_DEPTH = 16;
export const KINDS = Object.freeze(["int", "float", "str", "bytes", "bool", "list", "map", "any"]);
const RESERVED_KEYS = new Set(["v", "t"]);
const INT_MIN = -(2n ** 63n);
const INT_MAX = 2n ** 64n - 1n;

export class MessageError extends Error {
  constructor(message) {
    super(message);
    this.name = "MessageError";
  }
}

/** A msgpack float as read from the wire (kept apart from ints until validated, as Python's types are). */
class WireFloat {
  constructor(value) {
    this.value = value;
  }
}

// ------------------------------------------------------------------------------------------ msgpack reading

const UTF8 = new TextDecoder("utf-8", { fatal: true });

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.bytes.length) throw new MessageError("malformed msgpack: truncated input");
  }

  u8() {
    this.need(1);
    return this.bytes[this.pos++];
  }

  u16() {
    this.need(2);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  u32() {
    this.need(4);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  take(n) {
    this.need(n);
    const out = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  str(n) {
    this.need(n);
    const view = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return UTF8.decode(view);
    } catch {
      throw new MessageError("malformed msgpack: invalid UTF-8 in a string");
    }
  }

  /** One value; containers deeper than MAX_DEPTH are refused (Python's validation refuses them too). */
  value(depth) {
    const b = this.u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return this.map(b & 0x0f, depth);
    if ((b & 0xf0) === 0x90) return this.array(b & 0x0f, depth);
    if ((b & 0xe0) === 0xa0) return this.str(b & 0x1f);
    const v = this.view;
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.take(this.u8());
      case 0xc5:
        return this.take(this.u16());
      case 0xc6:
        return this.take(this.u32());
      case 0xca: {
        this.need(4);
        const f = v.getFloat32(this.pos);
        this.pos += 4;
        return new WireFloat(f);
      }
      case 0xcb: {
        this.need(8);
        const f = v.getFloat64(this.pos);
        this.pos += 8;
        return new WireFloat(f);
      }
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf: {
        this.need(8);
        const n = v.getBigUint64(this.pos);
        this.pos += 8;
        return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
      }
      case 0xd0: {
        this.need(1);
        return v.getInt8(this.pos++);
      }
      case 0xd1: {
        this.need(2);
        const n = v.getInt16(this.pos);
        this.pos += 2;
        return n;
      }
      case 0xd2: {
        this.need(4);
        const n = v.getInt32(this.pos);
        this.pos += 4;
        return n;
      }
      case 0xd3: {
        this.need(8);
        const n = v.getBigInt64(this.pos);
        this.pos += 8;
        return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
      }
      case 0xd9:
        return this.str(this.u8());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
      case 0xdc:
        return this.array(this.u16(), depth);
      case 0xdd:
        return this.array(this.u32(), depth);
      case 0xde:
        return this.map(this.u16(), depth);
      case 0xdf:
        return this.map(this.u32(), depth);
      case 0xc7:
      case 0xc8:
      case 0xc9:
      case 0xd4:
      case 0xd5:
      case 0xd6:
      case 0xd7:
      case 0xd8:
        throw new MessageError("msgpack extension types are not allowed");
      default:
        throw new MessageError(`malformed msgpack: reserved byte 0x${b.toString(16)}`);
    }
  }

  array(n, depth) {
    if (depth >= MAX_DEPTH) throw new MessageError(`malformed msgpack: nesting deeper than ${MAX_DEPTH}`);
    this.need(n); // every item is at least one byte: refuse impossible lengths before allocating
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  map(n, depth) {
    if (depth >= MAX_DEPTH) throw new MessageError(`malformed msgpack: nesting deeper than ${MAX_DEPTH}`);
    this.need(2 * n);
    const out = new Map();
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      if (typeof key !== "string") throw new MessageError("malformed msgpack: map keys must be strings");
      out.set(key, this.value(depth + 1));
    }
    return out;
  }
}

// ------------------------------------------------------------------------------------------ msgpack writing

const UTF8_ENCODER = new TextEncoder();

class Writer {
  constructor() {
    this.bytes = new Uint8Array(256);
    this.view = new DataView(this.bytes.buffer);
    this.pos = 0;
  }

  room(n) {
    if (this.pos + n <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.pos + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.bytes.subarray(0, this.pos));
    this.bytes = bigger;
    this.view = new DataView(bigger.buffer);
  }

  u8(v) {
    this.room(1);
    this.bytes[this.pos++] = v;
  }

  head(tag, size, n) {
    this.room(1 + size);
    this.bytes[this.pos++] = tag;
    if (size === 1) this.bytes[this.pos] = n;
    else if (size === 2) this.view.setUint16(this.pos, n);
    else if (size === 4) this.view.setUint32(this.pos, n);
    this.pos += size;
  }

  raw(data) {
    this.room(data.length);
    this.bytes.set(data, this.pos);
    this.pos += data.length;
  }

  float(f) {
    this.room(9);
    this.bytes[this.pos++] = 0xcb;
    this.view.setFloat64(this.pos, f);
    this.pos += 8;
  }

  int(v) {
    // msgpack-python's choice of format: fixints, then the smallest unsigned (>= 0) or signed (< 0) one
    if (typeof v === "bigint") {
      if (v >= 0n ? v <= 0xffffffffn : v >= -0x80000000n) return this.int(Number(v));
      this.room(9);
      if (v >= 0n) {
        this.bytes[this.pos++] = 0xcf;
        this.view.setBigUint64(this.pos, v);
      } else {
        this.bytes[this.pos++] = 0xd3;
        this.view.setBigInt64(this.pos, v);
      }
      this.pos += 8;
      return;
    }
    if (v >= 0) {
      if (v < 0x80) this.u8(v);
      else if (v <= 0xff) this.head(0xcc, 1, v);
      else if (v <= 0xffff) this.head(0xcd, 2, v);
      else if (v <= 0xffffffff) this.head(0xce, 4, v);
      else this.int(BigInt(v));
    } else if (v >= -32) this.u8(v + 0x100);
    else if (v >= -0x80) this.head(0xd0, 1, v & 0xff);
    else if (v >= -0x8000) this.head(0xd1, 2, v & 0xffff);
    else if (v >= -0x80000000) this.head(0xd2, 4, v >>> 0);
    else this.int(BigInt(v));
  }

  str(s) {
    const data = UTF8_ENCODER.encode(s);
    const n = data.length;
    if (n < 32) this.u8(0xa0 | n);
    else if (n <= 0xff) this.head(0xd9, 1, n);
    else if (n <= 0xffff) this.head(0xda, 2, n);
    else this.head(0xdb, 4, n);
    this.raw(data);
  }

  bin(data) {
    const n = data.length;
    if (n <= 0xff) this.head(0xc4, 1, n);
    else if (n <= 0xffff) this.head(0xc5, 2, n);
    else this.head(0xc6, 4, n);
    this.raw(data);
  }

  arrayHead(n) {
    if (n < 16) this.u8(0x90 | n);
    else if (n <= 0xffff) this.head(0xdc, 2, n);
    else this.head(0xdd, 4, n);
  }

  mapHead(n) {
    if (n < 16) this.u8(0x80 | n);
    else if (n <= 0xffff) this.head(0xde, 2, n);
    else this.head(0xdf, 4, n);
  }

  /** A plain value (already validated): integer-valued numbers as ints, other numbers as float64. */
  value(v) {
    if (v === null) this.u8(0xc0);
    else if (v === true) this.u8(0xc3);
    else if (v === false) this.u8(0xc2);
    else if (typeof v === "bigint") this.int(v);
    else if (typeof v === "number") {
      if (Number.isInteger(v) && !Object.is(v, -0)) this.int(v);
      else this.float(v);
    } else if (v instanceof WireFloat) this.float(v.value);
    else if (typeof v === "string") this.str(v);
    else if (v instanceof Uint8Array) this.bin(v);
    else if (Array.isArray(v)) {
      this.arrayHead(v.length);
      for (const item of v) this.value(item);
    } else {
      const keys = Object.keys(v);
      this.mapHead(keys.length);
      for (const key of keys) {
        this.str(key);
        this.value(v[key]);
      }
    }
  }

  result() {
    return this.bytes.slice(0, this.pos);
  }
}

// ------------------------------------------------------------------------------------------ validation

function isPlainObject(v) {
  if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array || v instanceof WireFloat) {
    return false;
  }
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** True when `value` is made only of msgpack's plain types, containers nested at most MAX_DEPTH deep. */
function isPlain(value, depth) {
  const t = typeof value;
  if (value === null || t === "boolean" || t === "number" || t === "bigint" || t === "string") return true;
  if (value instanceof Uint8Array || value instanceof WireFloat) return true;
  if (depth >= MAX_DEPTH) return false;
  if (Array.isArray(value)) return value.every((v) => isPlain(v, depth + 1));
  if (isPlainObject(value)) return Object.keys(value).every((k) => isPlain(value[k], depth + 1));
  return false;
}

/** A plain value with every WireFloat replaced by its number (and plain objects copied). */
function unwrap(value) {
  if (value instanceof WireFloat) return value.value;
  if (Array.isArray(value)) return value.map(unwrap);
  if (isPlainObject(value)) {
    const out = {};
    for (const key of Object.keys(value)) {
      Object.defineProperty(out, key, { value: unwrap(value[key]), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return value;
}

/** A decoded msgpack map (a Map) as a plain object ("__proto__" stays an ordinary key). */
function mapToObject(map) {
  const out = {};
  for (const [key, value] of map) {
    const v = value instanceof Map ? mapToObject(value) : Array.isArray(value) ? value.map(deMap) : value;
    Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function deMap(value) {
  if (value instanceof Map) return mapToObject(value);
  if (Array.isArray(value)) return value.map(deMap);
  return value;
}

function isInt(v) {
  if (typeof v === "number") return Number.isSafeInteger(v);
  if (typeof v === "bigint") return v >= INT_MIN && v <= INT_MAX;
  return false;
}

// each check: (value) -> [ok, normalised value]
const CHECKS = {
  int: (v) => [isInt(v), v],
  float: (v) => {
    let f;
    if (v instanceof WireFloat) f = v.value;
    else if (typeof v === "number" || typeof v === "bigint") f = Number(v);
    else return [false, v];
    return [Number.isFinite(f), f];
  },
  str: (v) => [typeof v === "string" && (v.isWellFormed ? v.isWellFormed() : true), v],
  bytes: (v) => {
    if (v instanceof Uint8Array) return [true, v];
    if (v instanceof ArrayBuffer) return [true, new Uint8Array(v)];
    return [false, v];
  },
  bool: (v) => [typeof v === "boolean", v],
  list: (v) => [Array.isArray(v) && isPlain(v, 1), v],
  map: (v) => [isPlainObject(v) && isPlain(v, 1), v],
  any: (v) => [isPlain(v, 1), v],
};

function lengthOf(kind, value) {
  if (kind === "str") {
    let n = 0;
    for (const _ of value) n++; // code points, as Python's len(str)
    return n;
  }
  if (kind === "map") return Object.keys(value).length;
  return value.length;
}

function kindName(v) {
  if (v === null) return "nil";
  if (v instanceof WireFloat) return "float";
  if (Array.isArray(v)) return "list";
  if (v instanceof Uint8Array) return "bytes";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "bigint") return "int";
  if (typeof v === "object") return "map";
  return typeof v;
}

// ------------------------------------------------------------------------------------------ the registry

export class MessageRegistry {
  constructor(maxEncodedSize = DEFAULT_MAX_ENCODED_SIZE) {
    this.maxEncodedSize = maxEncodedSize;
    this._types = new Map(); // name -> {name, fields: [{name, kind, required, maxLength, items}], known: Set}
  }

  /** Add a type; fields: [{name, kind, required = true, maxLength = null, items = null}] (max_length also read). */
  register(name, fields = [], doc = "") {
    if (typeof name !== "string" || !name) throw new Error("message type name must be a non-empty string");
    if (this._types.has(name)) throw new Error(`message type ${JSON.stringify(name)} is already registered`);
    const specs = fields.map((f) => {
      const spec = {
        name: f.name,
        kind: f.kind,
        required: f.required ?? true,
        maxLength: f.maxLength ?? f.max_length ?? null,
        items: f.items ?? null,
      };
      if (!KINDS.includes(spec.kind)) throw new Error(`field ${spec.name}: unknown kind ${spec.kind}`);
      if (spec.items !== null && (spec.kind !== "list" || !KINDS.includes(spec.items))) {
        throw new Error(`field ${spec.name}: items needs kind 'list' and a known kind`);
      }
      if (RESERVED_KEYS.has(spec.name)) throw new Error(`field name ${spec.name} is reserved for the envelope`);
      return Object.freeze(spec);
    });
    const names = specs.map((s) => s.name);
    if (new Set(names).size !== names.length) throw new Error(`message type ${name} has duplicate field names`);
    const type = Object.freeze({ name, fields: Object.freeze(specs), doc, known: new Set(names) });
    this._types.set(name, type);
    return type;
  }

  /** Types as Python's registry lists them ([{name, fields: [{name, kind, required, max_length, items}]}]). */
  static fromSchema(schema, maxEncodedSize = DEFAULT_MAX_ENCODED_SIZE) {
    const registry = new MessageRegistry(maxEncodedSize);
    for (const t of schema) registry.register(t.name, t.fields, t.doc ?? "");
    return registry;
  }

  copy() {
    const other = new MessageRegistry(this.maxEncodedSize);
    other._types = new Map(this._types);
    return other;
  }

  has(name) {
    return this._types.has(name);
  }

  types() {
    return [...this._types.values()];
  }

  /** The normalised fields of a message (absent and nil optional fields left out); MessageError otherwise. */
  validate(typeName, values) {
    const fields = this._check(typeName, values);
    for (const key of Object.keys(fields)) fields[key] = unwrap(fields[key]);
    return fields;
  }

  /** validate's checks, with floats kept as WireFloat (so that encode writes them as float64). */
  _check(typeName, values) {
    const type = typeof typeName === "string" ? this._types.get(typeName) : undefined;
    if (type === undefined) throw new MessageError(`unknown message type ${JSON.stringify(typeName)}`);
    const entries = values instanceof Map ? values : new Map(Object.entries(values ?? {}));
    for (const key of entries.keys()) {
      if (!type.known.has(key)) throw new MessageError(`${typeName}: unknown field ${JSON.stringify(key)}`);
    }
    const out = {};
    for (const spec of type.fields) {
      let value = entries.get(spec.name);
      if (value instanceof Map || Array.isArray(value)) value = deMap(value);
      if (value === null || value === undefined) {
        if (spec.required) throw new MessageError(`${typeName}: missing required field ${JSON.stringify(spec.name)}`);
        continue;
      }
      const [ok, normal] = CHECKS[spec.kind](value);
      if (!ok) throw new MessageError(`${typeName}.${spec.name}: expected ${spec.kind}, got ${kindName(value)}`);
      value = normal;
      if (spec.maxLength !== null) {
        const n = lengthOf(spec.kind, value);
        if (n > spec.maxLength) throw new MessageError(`${typeName}.${spec.name}: length ${n} exceeds ${spec.maxLength}`);
      }
      if (spec.items !== null) {
        const check = CHECKS[spec.items];
        value = value.map((item, index) => {
          const [itemOk, itemValue] = check(item);
          if (!itemOk) throw new MessageError(`${typeName}.${spec.name}[${index}]: expected ${spec.items}`);
          return spec.items === "float" ? new WireFloat(itemValue) : itemValue;
        });
      }
      out[spec.name] = spec.kind === "float" ? new WireFloat(value) : value;
    }
    return out;
  }

  /** msgpack bytes of a message, as Python's MessageRegistry.encode writes them. */
  encode(typeName, fields = {}) {
    const checked = this._check(typeName, fields);
    const w = new Writer();
    const keys = Object.keys(checked);
    w.mapHead(2 + keys.length);
    w.str("v");
    w.int(SCHEMA_VERSION);
    w.str("t");
    w.str(typeName);
    for (const key of keys) {
      w.str(key);
      w.value(checked[key]);
    }
    if (w.pos > this.maxEncodedSize) {
      throw new MessageError(`${typeName}: encoded size ${w.pos} exceeds ${this.maxEncodedSize} bytes`);
    }
    return w.result();
  }

  /** {type, fields} of msgpack bytes, validated; throws only MessageError. */
  decode(data) {
    if (data instanceof ArrayBuffer) data = new Uint8Array(data);
    if (!(data instanceof Uint8Array)) throw new MessageError(`expected bytes, got ${kindName(data)}`);
    if (data.length > this.maxEncodedSize) {
      throw new MessageError(`message of ${data.length} bytes exceeds ${this.maxEncodedSize} bytes`);
    }
    let obj;
    try {
      const reader = new Reader(data);
      obj = reader.value(0);
      if (reader.pos !== data.length) throw new MessageError("malformed msgpack: extra bytes after the message");
    } catch (exc) {
      if (exc instanceof MessageError) throw exc;
      throw new MessageError(`malformed msgpack: ${exc && exc.name}`);
    }
    if (!(obj instanceof Map)) throw new MessageError(`message must be a msgpack map, got ${kindName(obj)}`);
    const version = obj.get("v");
    obj.delete("v");
    if (typeof version !== "number" || version !== SCHEMA_VERSION) {
      const shown = version instanceof WireFloat ? `${version.value} (float)` : String(version);
      throw new MessageError(`unsupported schema version ${shown} (expected ${SCHEMA_VERSION})`);
    }
    const typeName = obj.get("t");
    obj.delete("t");
    if (typeof typeName !== "string") throw new MessageError("message type 't' missing or not a string");
    return { type: typeName, fields: this.validate(typeName, obj) };
  }
}

// ------------------------------------------------------------------------------------------ registered types

export const DEFAULT_REGISTRY = new MessageRegistry();
DEFAULT_REGISTRY.register("disconnect", [{ name: "reason", kind: "str", maxLength: 256 }]);
DEFAULT_REGISTRY.register("ping", [{ name: "time", kind: "float" }]);
DEFAULT_REGISTRY.register("pong", [{ name: "time", kind: "float" }]);

/** DEFAULT_REGISTRY plus netcode.sync.snapshot_messages' types (SNAPSHOT.md section 1). */
export const SNAPSHOT_REGISTRY = DEFAULT_REGISTRY.copy();
SNAPSHOT_REGISTRY.register("snap_config", [
  { name: "max_error", kind: "float" },
  { name: "origin", kind: "list", maxLength: 3, items: "float" },
  { name: "step", kind: "float" },
  { name: "rotation_bits", kind: "int" },
  { name: "jaw_lo", kind: "float" },
  { name: "jaw_hi", kind: "float" },
  { name: "jaw_bits", kind: "int" },
]);
SNAPSHOT_REGISTRY.register("snap_topology", [
  { name: "epoch", kind: "int" },
  { name: "cause", kind: "str", maxLength: 16 },
  { name: "instrument", kind: "int", required: false },
  { name: "removed_vertices", kind: "bytes" },
  { name: "removed_triangles", kind: "bytes" },
  { name: "added_triangles", kind: "bytes" },
  { name: "patch_offsets", kind: "bytes" },
  { name: "patch_vertices", kind: "bytes" },
  { name: "kept_patches", kind: "bytes", required: false },
]);
SNAPSHOT_REGISTRY.register("snap_predictor", [
  { name: "id", kind: "int" },
  { name: "vertex_ids", kind: "bytes" },
  { name: "gains", kind: "bytes" },
]);
SNAPSHOT_REGISTRY.register("snapshot", [{ name: "data", kind: "bytes" }]);
SNAPSHOT_REGISTRY.register("snap_ack", [
  { name: "newest", kind: "int" },
  { name: "bits", kind: "int" },
]);
SNAPSHOT_REGISTRY.register("snap_resync", [{ name: "reason", kind: "str", maxLength: 256 }]);

/** Add the thin client's types (netcode.protocol.schema.register_thin_client_types); returns the registry. */
export function registerThinClientTypes(registry) {
  const k = 1024; // netcode.protocol.response_model.MAX_RESPONSE_VERTICES
  registry.register("input", [{ name: "p", kind: "bytes", maxLength: 1100 }]);
  registry.register("input_ack", [
    { name: "seq", kind: "int" },
    { name: "server_time", kind: "float" },
    { name: "hold", kind: "float" },
  ]);
  registry.register("grasp", [
    { name: "grasp_id", kind: "int" },
    { name: "instrument", kind: "int" },
    { name: "device", kind: "int" },
    { name: "epoch", kind: "int" },
    { name: "server_time", kind: "float" },
    { name: "baseline", kind: "list", maxLength: 8, items: "float" },
    { name: "columns", kind: "int" },
    { name: "objects", kind: "bytes", maxLength: 4 * k },
    { name: "vertices", kind: "bytes", maxLength: 4 * k },
    { name: "matrices", kind: "bytes", maxLength: 4 * 18 * k },
  ]);
  registry.register("release", [{ name: "grasp_id", kind: "int" }]);
  registry.register("snap_suture", [ // the suture's needle object and shapes (SNAPSHOT.md section 6)
    { name: "needle", kind: "int" },
    { name: "radius", kind: "float" },
    { name: "arc", kind: "float" },
    { name: "wire_radius", kind: "float" },
    { name: "thread_radius", kind: "float" },
  ]);
  registry.register("snap_thread", [ // thread: which of the room's threads (absent: 0, the live one)
    { name: "data", kind: "bytes", maxLength: 64 * 1024 },
    { name: "thread", kind: "int", required: false },
  ]);
  registry.register("thread_ack", [
    { name: "newest", kind: "int" },
    { name: "bits", kind: "int" },
    { name: "thread", kind: "int", required: false },
  ]);
  return registry;
}

/**
 * What the rehearsal server speaks (rehearsal.wire.REHEARSAL_REGISTRY): the snapshot and thin-client types
 * plus welcome, command, event, surface_damage, refused, forces and fixtures. tests/rehearsal/web/test_messages.py checks it equals
 * Python's field for field: when rehearsal/wire.py changes, change it here too.
 */
export const REHEARSAL_REGISTRY = registerThinClientTypes(SNAPSHOT_REGISTRY.copy());
REHEARSAL_REGISTRY.register("welcome", [
  { name: "session", kind: "str", maxLength: 64 },
  { name: "scenario", kind: "str", maxLength: 64 },
  { name: "participant", kind: "int" },
  { name: "role", kind: "str", maxLength: 32 },
  { name: "name", kind: "str", maxLength: 64 },
  { name: "state", kind: "str", maxLength: 16 },
  { name: "hands", kind: "map", required: false, maxLength: 2 },
  { name: "progress", kind: "map", required: false, maxLength: 8 },
  { name: "annotations", kind: "list", required: false, maxLength: 64 },
]);
REHEARSAL_REGISTRY.register("command", [
  { name: "action", kind: "str", maxLength: 32 },
  { name: "args", kind: "map", required: false, maxLength: 8 },
  { name: "id", kind: "int", required: false },
]);
REHEARSAL_REGISTRY.register("event", [
  { name: "kind", kind: "str", maxLength: 32 },
  { name: "server_time", kind: "float" },
  { name: "session_time", kind: "float", required: false },
  { name: "by", kind: "int", required: false },
  { name: "instrument", kind: "int", required: false },
  { name: "detail", kind: "map", required: false, maxLength: 32 },
]);
REHEARSAL_REGISTRY.register("surface_damage", [
  { name: "vertices", kind: "bytes", maxLength: 4 * 4096 }, // rehearsal.surface_damage.MAX_DAMAGE_VERTICES
  { name: "levels", kind: "bytes", maxLength: 4096 },
  { name: "reset", kind: "bool" },
]);
REHEARSAL_REGISTRY.register("refused", [
  { name: "request", kind: "str", maxLength: 64 },
  { name: "reason", kind: "str", maxLength: 256 },
  { name: "id", kind: "int", required: false },
]);
REHEARSAL_REGISTRY.register("forces", [
  // netcode.protocol.forces (MAX_FORCE_INSTRUMENTS = 32)
  { name: "tick", kind: "int" },
  { name: "server_time", kind: "float" },
  { name: "objects", kind: "bytes", maxLength: 4 * 32 },
  { name: "forces", kind: "bytes", maxLength: 6 * 32 },
  { name: "grasp", kind: "bytes", maxLength: 6 * 32 },
  { name: "positions", kind: "bytes", maxLength: 12 * 32 },
]);
REHEARSAL_REGISTRY.register("fixtures", [
  // netcode.protocol.fixtures (MAX_FIXTURES = 32); item kinds are checked by the decoder of the set
  { name: "revision", kind: "int" },
  { name: "ids", kind: "list", maxLength: 32 },
  { name: "roles", kind: "list", maxLength: 32 },
  { name: "shapes", kind: "list", maxLength: 32 },
  { name: "active", kind: "list", maxLength: 32 },
  { name: "stiffness", kind: "list", maxLength: 32, items: "float" },
  { name: "params", kind: "list", maxLength: 32 },
  { name: "triangles", kind: "list", maxLength: 32 },
]);

/** {type, fields} of one message (one WebSocket binary frame); MessageError when invalid. */
export function decodeMessage(bytes, registry = REHEARSAL_REGISTRY) {
  return registry.decode(bytes);
}

/** The bytes of one message, as Python's registry encodes it; MessageError when the fields do not fit. */
export function encodeMessage(type, fields, registry = REHEARSAL_REGISTRY) {
  return registry.encode(type, fields);
}
