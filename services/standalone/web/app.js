/*
 * The chat page, modelled on chatofpomelo's web client: ask the gate which connector to use,
 * enter a room there, then chat with everyone or one person. The gate is `?gate=host:port`,
 * else this page's host on port 3014 (chatofpomelo's).
 */
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var NAME_RE = /^[a-zA-Z0-9_\u4e00-\u9fa5]{1,20}$/;
  var params = new URLSearchParams(location.search);
  var gate = (params.get('gate') || (location.hostname || '127.0.0.1') + ':3014').split(':');
  var gateHost = gate[0], gatePort = Number(gate[1] || 3014);
  var pomelo = null, username = null, rid = null, leaving = false;

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
    try {
      var entry = await queryEntry(name);
      pomelo = new Pomelo();
      pomelo.on('onChat', onChat).on('onAdd', function (m) { addUser(m.user); line('system', null, m.user + ' joined'); })
        .on('onLeave', function (m) { removeUser(m.user); line('system', null, m.user + ' left'); })
        .on('kick', function (m) { line('system', null, 'kicked by the server: ' + (m.reason || '')); })
        .on('close', onClose);
      status('connecting to ' + entry.host + ':' + entry.port);
      try {
        await pomelo.init({ host: entry.host, port: entry.port });
      } catch (e) {
        throw new Error('The server is unreachable (connector ' + entry.host + ':' + entry.port + ').');
      }
      var resp = await pomelo.request('connector.entryHandler.enter', { username: name, rid: room });
      if (resp.error || resp.code === 500) {
        pomelo.disconnect();
        throw new Error(resp.error ? 'Please change your name to login: "' + name + '" is taken in this room.' : 'The server could not log you in, please try again.');
      }
      username = name;
      rid = room;
      leaving = false;
      status('connected to ' + entry.host + ':' + entry.port);
      showChat(resp.users || []);
    } catch (e) {
      status('not connected');
      showLogin(e.message);
    }
  }

  function onChat(m) {
    var isPrivate = m.target && m.target !== '*';
    if (isPrivate && m.from === username) return; // echoed locally when sent
    line(isPrivate ? 'private' : 'public', m.from, isPrivate ? '(to you) ' + m.msg : m.msg);
  }

  function onClose() {
    status('not connected');
    showLogin(leaving ? '' : 'Disconnected from the server.');
  }

  async function send(event) {
    event.preventDefault();
    var text = $('entry').value;
    if (!text.trim() || !pomelo) return;
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
    if (pomelo) pomelo.disconnect();
    onClose();
  });
  showLogin('');
})();
