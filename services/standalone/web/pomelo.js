/*
 * A Pomelo WebSocket client for browsers, written for Shaddock from the protocol description
 * (package layer, message layer, handshake, heartbeat, route dictionary, pomelo-protobuf
 * decoding of pushes and responses). Works against Shaddock and against Node Pomelo servers.
 *
 *   const p = new Pomelo();
 *   await p.init({host, port});
 *   const resp = await p.request('connector.entryHandler.enter', {username, rid});
 *   p.on('onChat', msg => ...);  p.on('close', reason => ...);  p.on('kick', body => ...);
 */
(function (global) {
  'use strict';

  var PKG_HANDSHAKE = 1, PKG_ACK = 2, PKG_HEARTBEAT = 3, PKG_DATA = 4, PKG_KICK = 5;
  var MSG_REQUEST = 0, MSG_NOTIFY = 1, MSG_RESPONSE = 2, MSG_PUSH = 3;
  var utf8 = new TextEncoder();
  var utf8dec = new TextDecoder();

  // ---- package layer: type (1) | length (3, big-endian) | body ----
  function encodePackage(type, body) {
    body = body || new Uint8Array(0);
    var out = new Uint8Array(4 + body.length);
    out[0] = type;
    out[1] = (body.length >> 16) & 0xff;
    out[2] = (body.length >> 8) & 0xff;
    out[3] = body.length & 0xff;
    out.set(body, 4);
    return out;
  }

  // A server may put several packages in one frame.
  function decodePackages(buf) {
    var out = [], off = 0;
    while (off < buf.length) {
      if (off + 4 > buf.length) throw new Error('truncated package header');
      var len = (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3];
      if (off + 4 + len > buf.length) throw new Error('truncated package body');
      out.push({ type: buf[off], body: buf.subarray(off + 4, off + 4 + len) });
      off += 4 + len;
    }
    return out;
  }

  // ---- message layer: flag | id (varint, LSB group first) | route | body ----
  function encodeMessage(id, type, route, body, dict) {
    var code = dict && Object.prototype.hasOwnProperty.call(dict, route) ? dict[route] : undefined;
    var routeBytes = code === undefined ? utf8.encode(route) : null;
    if (routeBytes && routeBytes.length > 255) throw new Error('route too long');
    var idBytes = [];
    if (type === MSG_REQUEST) {
      do {
        var b = id % 128;
        id = Math.floor(id / 128);
        idBytes.push(id > 0 ? b | 0x80 : b);
      } while (id > 0);
    }
    var routeLen = type === MSG_RESPONSE ? 0 : (code === undefined ? 1 + routeBytes.length : 2);
    var out = new Uint8Array(1 + idBytes.length + routeLen + body.length);
    var off = 0;
    out[off++] = (type << 1) | (code === undefined ? 0 : 1);
    for (var i = 0; i < idBytes.length; i++) out[off++] = idBytes[i];
    if (type !== MSG_RESPONSE) {
      if (code === undefined) {
        out[off++] = routeBytes.length;
        out.set(routeBytes, off);
        off += routeBytes.length;
      } else {
        out[off++] = (code >> 8) & 0xff;
        out[off++] = code & 0xff;
      }
    }
    out.set(body, off);
    return out;
  }

  function decodeMessage(buf) {
    var off = 0, flag = buf[off++];
    var type = (flag >> 1) & 0x7, id = 0, route = null;
    if (type === MSG_REQUEST || type === MSG_RESPONSE) {
      var mul = 1, b;
      do {
        if (off >= buf.length) throw new Error('truncated id');
        b = buf[off++];
        id += (b & 0x7f) * mul;
        mul *= 128;
      } while (b & 0x80);
    }
    if (type === MSG_REQUEST || type === MSG_NOTIFY || type === MSG_PUSH) {
      if (flag & 1) {
        route = (buf[off] << 8) | buf[off + 1];
        off += 2;
      } else {
        var len = buf[off++];
        route = utf8dec.decode(buf.subarray(off, off + len));
        off += len;
      }
    }
    return { id: id, type: type, compressed: !!(flag & 1), route: route, body: buf.subarray(off) };
  }

  // ---- pomelo-protobuf decoding (server -> client), for servers that use protos ----
  function ProtoReader(buf) { this.buf = buf; this.off = 0; }
  ProtoReader.prototype.varint = function () {
    var n = 0, mul = 1, b;
    do { b = this.buf[this.off++]; n += (b & 0x7f) * mul; mul *= 128; } while (b & 0x80);
    return n;
  };
  ProtoReader.prototype.zigzag = function () { var n = this.varint(); return n % 2 ? -(n + 1) / 2 : n / 2; };
  ProtoReader.prototype.bytes = function (n) { var b = this.buf.subarray(this.off, this.off + n); this.off += n; return b; };
  ProtoReader.prototype.float = function () { var v = new DataView(this.buf.buffer, this.buf.byteOffset + this.off, 4).getFloat32(0, true); this.off += 4; return v; };
  ProtoReader.prototype.double = function () { var v = new DataView(this.buf.buffer, this.buf.byteOffset + this.off, 8).getFloat64(0, true); this.off += 8; return v; };

  var SIMPLE = { uInt32: 1, sInt32: 1, int32: 1, float: 1, double: 1 };

  function decodeProto(buf, proto, root) {
    var r = new ProtoReader(buf), msg = {};
    function value(type) {
      switch (type) {
        case 'uInt32': return r.varint();
        case 'int32': case 'sInt32': return r.zigzag();
        case 'float': return r.float();
        case 'double': return r.double();
        case 'string': return utf8dec.decode(r.bytes(r.varint()));
        default: {
          var sub = (proto.__messages && proto.__messages[type]) || (root.__messages && root.__messages[type]) || root['message ' + type];
          var len = r.varint();
          return decodeProto(r.bytes(len), sub || {}, root);
        }
      }
    }
    while (r.off < buf.length) {
      var key = r.varint(), name = proto.__tags && proto.__tags[key >> 3];
      var field = name && proto[name];
      if (!field) throw new Error('unknown protobuf tag ' + (key >> 3));
      if (field.option === 'repeated') {
        msg[name] = msg[name] || [];
        if (SIMPLE[field.type]) {
          for (var n = r.varint(); n > 0; n--) msg[name].push(value(field.type));
        } else {
          msg[name].push(value(field.type));
        }
      } else {
        msg[name] = value(field.type);
      }
    }
    return msg;
  }

  // ---- the client ----
  function Pomelo() {
    this.listeners = {};
    this.socket = null;
    this.reqId = 0;
    this.callbacks = {};
    this.routes = {};
    this.dict = null;
    this.abbrs = null;
    this.serverProtos = {};
    this.protosRoot = {};
    this.protoVersion = 0;
    this.heartbeatInterval = 0;
    this.heartbeatTimer = null;
    this.heartbeatTimeout = null;
  }

  Pomelo.prototype.on = function (event, fn) {
    (this.listeners[event] = this.listeners[event] || []).push(fn);
    return this;
  };
  Pomelo.prototype.off = function (event) { delete this.listeners[event]; return this; };
  Pomelo.prototype.emit = function (event) {
    var args = Array.prototype.slice.call(arguments, 1);
    (this.listeners[event] || []).slice().forEach(function (fn) { fn.apply(null, args); });
  };

  // Connects, handshakes and acks; resolves with the handshake's `user` (if any).
  Pomelo.prototype.init = function (params) {
    var self = this;
    var url = params.url || ('ws://' + params.host + ':' + params.port + (params.path || '/'));
    return new Promise(function (resolve, reject) {
      var settled = false;
      var ws;
      try { ws = new WebSocket(url); } catch (e) { reject(e); return; }
      ws.binaryType = 'arraybuffer';
      self.socket = ws;
      ws.onopen = function () {
        var hs = { sys: { type: 'js-websocket', version: '0.0.1', rsa: {}, protoVersion: self.protoVersion } };
        if (params.user) hs.user = params.user;
        ws.send(encodePackage(PKG_HANDSHAKE, utf8.encode(JSON.stringify(hs))));
      };
      ws.onerror = function () {
        if (!settled) { settled = true; reject(new Error('cannot connect to ' + url)); }
      };
      ws.onclose = function (ev) {
        self.stopHeartbeat();
        if (self.socket === ws) self.socket = null;
        if (!settled) { settled = true; reject(new Error('connection closed during handshake')); return; }
        self.failPending();
        self.emit('close', ev.reason || 'closed');
      };
      ws.onmessage = function (ev) {
        var pkgs;
        try { pkgs = decodePackages(new Uint8Array(ev.data)); } catch (e) { ws.close(); return; }
        pkgs.forEach(function (pkg) {
          self.resetHeartbeatTimeout();
          if (pkg.type === PKG_HANDSHAKE) {
            var data = JSON.parse(utf8dec.decode(pkg.body));
            if (data.code !== 200) {
              settled = true;
              reject(new Error(data.code === 501 ? 'client version not fullfill' : 'handshake fail (code ' + data.code + ')'));
              ws.close();
              return;
            }
            self.onHandshake(data);
            ws.send(encodePackage(PKG_ACK));
            settled = true;
            resolve(data.user);
          } else if (pkg.type === PKG_HEARTBEAT) {
            self.onHeartbeat();
          } else if (pkg.type === PKG_DATA) {
            self.onData(pkg.body);
          } else if (pkg.type === PKG_KICK) {
            var body = {};
            try { body = JSON.parse(utf8dec.decode(pkg.body)); } catch (e) { /* empty kick */ }
            self.emit('kick', body);
          }
        });
      };
    });
  };

  Pomelo.prototype.onHandshake = function (data) {
    var sys = data.sys || {};
    this.heartbeatInterval = sys.heartbeat ? sys.heartbeat * 1000 : 0;
    // As the reference client: the dict is replaced by what the server sends (or none).
    this.dict = sys.dict || null;
    this.abbrs = {};
    if (this.dict) {
      for (var r in this.dict) this.abbrs[this.dict[r]] = r;
    }
    if (sys.protos) {
      this.protoVersion = sys.protos.version || 0;
      this.serverProtos = sys.protos.server || {};
      this.protosRoot = sys.protos.server || {};
    }
  };

  Pomelo.prototype.onHeartbeat = function () {
    var self = this;
    if (!this.heartbeatInterval || this.heartbeatTimer) return;
    this.heartbeatTimer = setTimeout(function () {
      self.heartbeatTimer = null;
      if (self.socket && self.socket.readyState === 1) self.socket.send(encodePackage(PKG_HEARTBEAT));
    }, this.heartbeatInterval);
  };

  // Any package from the server proves it alive; silence for 2 intervals closes the socket.
  Pomelo.prototype.resetHeartbeatTimeout = function () {
    var self = this;
    if (!this.heartbeatInterval) return;
    clearTimeout(this.heartbeatTimeout);
    this.heartbeatTimeout = setTimeout(function () {
      self.emit('heartbeat timeout');
      if (self.socket) self.socket.close();
    }, this.heartbeatInterval * 2 + 1000);
  };

  Pomelo.prototype.stopHeartbeat = function () {
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.heartbeatTimeout);
    this.heartbeatTimer = null;
    this.heartbeatTimeout = null;
  };

  Pomelo.prototype.decodeBody = function (route, body) {
    if (route && this.serverProtos[route]) return decodeProto(body, this.serverProtos[route], this.protosRoot);
    if (!body.length) return {};
    return JSON.parse(utf8dec.decode(body));
  };

  Pomelo.prototype.onData = function (buf) {
    var msg = decodeMessage(buf);
    if (msg.type === MSG_RESPONSE) {
      var cb = this.callbacks[msg.id];
      if (!cb) return;
      delete this.callbacks[msg.id];
      var route = this.routes[msg.id];
      delete this.routes[msg.id];
      try { cb.resolve(this.decodeBody(route, msg.body)); } catch (e) { cb.reject(e); }
    } else if (msg.type === MSG_PUSH) {
      var r = msg.compressed ? this.abbrs && this.abbrs[msg.route] : msg.route;
      var body;
      try { body = this.decodeBody(r, msg.body); } catch (e) { body = {}; }
      this.emit(r, body);
    }
  };

  Pomelo.prototype.failPending = function () {
    var cbs = this.callbacks;
    this.callbacks = {};
    for (var id in cbs) cbs[id].reject(new Error('connection closed'));
  };

  Pomelo.prototype.request = function (route, msg) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (!self.socket || self.socket.readyState !== 1) { reject(new Error('not connected')); return; }
      var id = ++self.reqId;
      self.callbacks[id] = { resolve: resolve, reject: reject };
      self.routes[id] = route;
      self.socket.send(encodePackage(PKG_DATA, encodeMessage(id, MSG_REQUEST, route, utf8.encode(JSON.stringify(msg || {})), self.dict)));
    });
  };

  Pomelo.prototype.notify = function (route, msg) {
    if (!this.socket || this.socket.readyState !== 1) return;
    this.socket.send(encodePackage(PKG_DATA, encodeMessage(0, MSG_NOTIFY, route, utf8.encode(JSON.stringify(msg || {})), this.dict)));
  };

  Pomelo.prototype.disconnect = function () {
    this.stopHeartbeat();
    if (this.socket) {
      var ws = this.socket;
      this.socket = null;
      ws.onclose = null;
      this.failPending();
      ws.close();
    }
  };

  Pomelo.codec = { encodePackage: encodePackage, decodePackages: decodePackages, encodeMessage: encodeMessage, decodeMessage: decodeMessage, decodeProto: decodeProto };
  global.Pomelo = Pomelo;
})(typeof window !== 'undefined' ? window : globalThis);
