/*
 * The chat page, modelled on chatofpomelo's web client: ask the gate which connector to use,
 * enter a room there, then chat with everyone or one person. The gate is `?gate=host:port`,
 * else this page's host on port 3014 (chatofpomelo's).
 *
 * When the connection drops (a connector restarting in a deploy kicks with "reconnect", a
 * network blip), it shows "reconnecting…", asks the gate again with exponential backoff and
 * full jitter, and enters with `recover: true` and the last epoch and offset it saw, so the
 * messages said meanwhile appear, each once (docs/recovery.md). Against a server without
 * recovery (Node Pomelo) it still reconnects; it then says that messages may be missing.
 */
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var NAME_RE = /^[a-zA-Z0-9_\u4e00-\u9fa5]{1,20}$/;
  var params = new URLSearchParams(location.search);
  var gate = (params.get('gate') || (location.hostname || '127.0.0.1') + ':3014').split(':');
  var gateHost = gate[0], gatePort = Number(gate[1] || 3014);
  var pomelo = null, username = null, rid = null, leaving = false;
  // Recovery: the room's epoch and the last offset shown; reconnect attempts so far.
  var epoch = null, offset = 0, attempt = 0, retryTimer = null;

  $('gate-address').textContent = gateHost + ':' + gatePort;

  function status(text) { $('status').textContent = text; }

  function showLogin(error) {
    $('chat').classList.add('hidden');
    $('login').classList.remove('hidden');
    $('login-error').textContent = error || '';
    $('login-button').disabled = false;
  }

  function showChat(users) {
    $('login').classList.add('hidden');
    $('chat').classList.remove('hidden');
    $('room-name').textContent = rid;
    $('me').textContent = username;
    $('messages').innerHTML = '';
    $('users').innerHTML = '';
    $('target').innerHTML = '<option value="*">everyone</option>';
    users.forEach(addUser);
    $('entry').focus();
  }

  function addUser(name) {
    if (document.querySelector('#users li[data-name="' + CSS.escape(name) + '"]')) return;
    var li = document.createElement('li');
    li.dataset.name = name;
    li.textContent = name;
    if (name === username) li.className = 'me';
    $('users').appendChild(li);
    if (name !== username) {
      var opt = document.createElement('option');
      opt.value = name;
      opt.textContent = name;
      $('target').appendChild(opt);
    }
  }

  function removeUser(name) {
    var li = document.querySelector('#users li[data-name="' + CSS.escape(name) + '"]');
    if (li) li.remove();
    var opt = document.querySelector('#target option[value="' + CSS.escape(name) + '"]');
    if (opt) opt.remove();
  }

  function line(cls, from, text) {
    var li = document.createElement('li');
    li.className = cls;
    if (from) {
      var f = document.createElement('span');
      f.className = 'from';
      f.textContent = from + ': ';
      li.appendChild(f);
    }
    li.appendChild(document.createTextNode(text));
    $('messages').appendChild(li);
    $('messages').scrollTop = $('messages').scrollHeight;
  }

  async function queryEntry(uid) {
    var p = new Pomelo();
    status('asking the gate');
    try {
      await p.init({ host: gateHost, port: gatePort });
    } catch (e) {
      throw new Error('The server is unreachable (gate ' + gateHost + ':' + gatePort + ').');
    }
    try {
      var resp = await p.request('gate.gateHandler.queryEntry', { uid: uid });
      if (resp.code !== 200) throw new Error('There is no server to log in, please wait.');
      return resp;
    } finally {
      p.disconnect();
    }
  }

  async function login(event) {
    event.preventDefault();
    var name = $('name').value.trim(), room = $('room').value.trim();
    if (!NAME_RE.test(name)) { showLogin('Name: 1-20 letters, digits, _ or Chinese characters.'); return; }
    if (!NAME_RE.test(room)) { showLogin('Room: 1-20 letters, digits, _ or Chinese characters.'); return; }
    $('login-button').disabled = true;
    $('login-error').textContent = '';
    epoch = null;
    offset = 0;
    attempt = 0;
    try {
      var resp = await enter(name, room);
      username = name;
      rid = room;
      leaving = false;
      showChat(resp.users || []);
    } catch (e) {
      status('not connected');
      showLogin(e.message);
    }
  }

  /* Asks the gate, connects, enters (recovering when it can); resolves with the answer. */
  async function enter(name, room) {
    var entry = await queryEntry(name);
    var p = new Pomelo();
    p.on('onChat', fresh(onChat))
      .on('onAdd', fresh(onAdd))
      .on('onLeave', fresh(onLeave))
      .on('kick', function (m) { p.kickReason = m.reason || ''; })
      .on('close', function () { if (pomelo === p) onClose(p.kickReason); })
      .on('heartbeat timeout', function () { p.disconnect(); if (pomelo === p) onClose(null); });
    status('connecting to ' + entry.host + ':' + entry.port);
    try {
      await p.init({ host: entry.host, port: entry.port });
    } catch (e) {
      throw new Error('The server is unreachable (connector ' + entry.host + ':' + entry.port + ').');
    }
    var body = { username: name, rid: room, recover: true };
    if (epoch !== null) { body.epoch = epoch; body.offset = offset; }
    var resp = await p.request('connector.entryHandler.enter', body);
    if (resp.error || resp.code === 500) {
      p.disconnect();
      throw new Error(resp.error ? 'Please change your name to login: "' + name + '" is taken in this room.' : 'The server could not log you in, please try again.');
    }
    var back = epoch !== null || attempt > 0;
    if (back && resp.recovered === true) {
      (resp.messages || []).forEach(function (m) {
        var body = Object.assign({}, m.body, { offset: m.offset });
        if (m.route === 'onChat') fresh(onChat)(body);
        else if (m.route === 'onAdd') fresh(onAdd)(body);
        else if (m.route === 'onLeave') fresh(onLeave)(body);
      });
    } else if (back) {
      line('system', null, 'reconnected; some messages may be missing');
    }
    if (typeof resp.epoch === 'string') {
      if (resp.epoch !== epoch || resp.recovered !== true) offset = resp.offset || 0;
      else offset = Math.max(offset, resp.offset || 0);
      epoch = resp.epoch;
    }
    pomelo = p;
    status('connected to ' + entry.host + ':' + entry.port);
    return resp;
  }

  /* Wraps a push handler: a message at or below the last offset shown was shown already. */
  function fresh(handler) {
    return function (m) {
      if (typeof m.offset === 'number') {
        if (m.offset <= offset) return;
        offset = m.offset;
      }
      handler(m);
    };
  }

  function onAdd(m) { addUser(m.user); line('system', null, m.user + ' joined'); }
  function onLeave(m) { removeUser(m.user); line('system', null, m.user + ' left'); }

  function onChat(m) {
    var isPrivate = m.target && m.target !== '*';
    if (isPrivate && m.from === username) return; // echoed locally when sent
    line(isPrivate ? 'private' : 'public', m.from, isPrivate ? '(to you) ' + m.msg : m.msg);
  }

  /* The connection ended: back to the login form if the user left or was sent away, else
     reconnect. */
  function onClose(kickReason) {
    pomelo = null;
    if (leaving || !username) {
      status('not connected');
      showLogin('');
      return;
    }
    if (kickReason && kickReason !== 'reconnect') {
      status('not connected');
      showLogin('kicked by the server: ' + kickReason);
      return;
    }
    reconnect();
  }

  function reconnect() {
    status('reconnecting…');
    $('chat-error').textContent = 'reconnecting…';
    // Full jitter: a uniform wait under an exponential ceiling (250 ms doubling, at most 10 s).
    var ceiling = Math.min(10000, 250 * Math.pow(2, Math.min(attempt, 10)));
    attempt += 1;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(async function () {
      if (leaving) return;
      try {
        var resp = await enter(username, rid);
        attempt = 0;
        $('chat-error').textContent = '';
        $('users').innerHTML = '';
        $('target').innerHTML = '<option value="*">everyone</option>';
        (resp.users || []).forEach(addUser);
      } catch (e) {
        reconnect();
      }
    }, Math.random() * ceiling);
  }

  async function send(event) {
    event.preventDefault();
    var text = $('entry').value;
    if (!text.trim()) return;
    if (!pomelo) { $('chat-error').textContent = 'reconnecting…, not sent'; return; }
    var target = $('target').value;
    $('entry').value = '';
    try {
      var resp = await pomelo.request('chat.chatHandler.send', { rid: rid, content: text, from: username, target: target });
      if (resp.code === 500) { $('chat-error').textContent = 'Message not delivered.'; return; }
      $('chat-error').textContent = '';
      if (target !== '*') line('private', username, '(to ' + target + ') ' + text);
    } catch (e) {
      $('chat-error').textContent = 'Message not delivered: ' + e.message;
    }
  }

  $('login-form').addEventListener('submit', login);
  $('send-form').addEventListener('submit', send);
  $('leave').addEventListener('click', function () {
    leaving = true;
    clearTimeout(retryTimer);
    var p = pomelo;
    pomelo = null;
    if (p) p.disconnect();
    username = null;
    onClose(null);
  });
  showLogin('');
})();
