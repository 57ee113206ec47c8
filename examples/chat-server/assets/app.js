// Chat web client. Two jobs, no dependencies:
// 1. Forms marked data-api post their fields as JSON to the API (create room, DM, join).
// 2. The room page: live messages over the WebSocket (protocol: docs/PROTOCOL.md), older
//    history on scroll, members with presence, typing, read markers.
// User text is only ever inserted with textContent, never as HTML.
"use strict";

(() => {
  async function api(path, body, method = "POST") {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body ?? {});
    }
    const r = await fetch(path, init);
    if (r.status === 401) {
      location.href = "/auth?next=" + encodeURIComponent(location.pathname);
      throw new Error("signed out");
    }
    if (r.status === 204) return {};
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((data.error && data.error.message) || `request failed (${r.status})`);
    return data;
  }

  function showError(el, text) {
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const error = form.querySelector(".error");
      const button = form.querySelector("button[type=submit]");
      showError(error, "");
      if (button) button.disabled = true;
      try {
        const r = await api(form.dataset.api, Object.fromEntries(new FormData(form)));
        if (form.dataset.then === "room" && r.room) location.href = "/chat/" + r.room.id;
        else location.reload();
      } catch (e) {
        showError(error, e.message);
      } finally {
        if (button) button.disabled = false;
      }
    });
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function localTime(el) {
    const d = new Date(Number(el.dataset.at));
    el.textContent = timeFmt.format(d);
    el.title = fullFmt.format(d);
  }
  document.querySelectorAll("time[data-at]").forEach(localTime);

  const root = document.getElementById("room");
  if (!root) return;

  // ---------------------------------------------------------------------------------------
  // The room
  // ---------------------------------------------------------------------------------------
  const roomId = Number(root.dataset.room);
  const meId = Number(root.dataset.me);
  const isMember = root.dataset.member === "true";
  const $ = (id) => document.getElementById(id);
  const list = $("messages");
  const conn = $("conn");
  const olderButton = $("load-older");
  const typingLine = $("typing");
  const composer = $("composer");
  const input = $("message");

  let latest = Number(root.dataset.latest); // highest seq shown
  let oldest = Number(root.dataset.oldest); // lowest seq shown (0: none)
  let hasMore = root.dataset.hasMore === "true";
  let loadingOlder = false;
  let ws = null;
  let backoff = 500;
  let nextId = 1;
  const replies = new Map(); // request id -> handler(frame)
  const unsent = new Map(); // client_msg_id -> {body, li}, until `sent`
  let readSeq = 0;
  let readTimer = null;
  let lastTyping = 0;
  const typists = new Map(); // username -> timeout

  function setConn(text, state) {
    conn.textContent = text;
    conn.className = "conn " + state;
  }

  function request(frame, onReply) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    if (onReply) {
      frame.id = nextId++;
      replies.set(frame.id, onReply);
    }
    ws.send(JSON.stringify(frame));
    return true;
  }

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function scrollToBottom() {
    list.scrollTop = list.scrollHeight;
  }

  function messageItem(e) {
    const li = document.createElement("li");
    li.className = "msg";
    if (e.sender === meId) li.classList.add("mine");
    if (e.sender === null) li.classList.add("system");
    if (e.seq) li.dataset.seq = e.seq;
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = e.sender_name;
    const time = document.createElement("time");
    time.dataset.at = e.at;
    time.dateTime = new Date(e.at).toISOString();
    localTime(time);
    meta.append(who, " ", time);
    const body = document.createElement("p");
    body.className = "body";
    body.textContent = e.body;
    li.append(meta, body);
    return li;
  }

  // Inserts an entry in seq order; an entry already shown (replay after a reconnect, or our
  // own message we showed while it was being sent) is not shown twice.
  function addEntry(e, { scroll = true } = {}) {
    if (list.querySelector(`li[data-seq="${e.seq}"]`)) return;
    const wasAtBottom = nearBottom();
    let li;
    const mine = e.client_msg_id && unsent.get(e.client_msg_id);
    if (mine && e.sender === meId) {
      li = mine.li;
      li.remove();
      unsent.delete(e.client_msg_id);
      li.classList.remove("pending", "failed");
      li.dataset.seq = e.seq;
      li.querySelector(".status")?.remove();
      const time = li.querySelector("time");
      time.dataset.at = e.at;
      localTime(time);
    } else {
      li = messageItem(e);
    }
    // Usually the newest: scan from the end for the first shown seq below it.
    let after = null;
    for (let n = list.lastElementChild; n; n = n.previousElementSibling) {
      if (n.dataset.seq && Number(n.dataset.seq) < e.seq) {
        after = n;
        break;
      }
    }
    if (after) after.after(li);
    else list.prepend(li);
    // Messages still being sent stay at the bottom.
    for (const { li: p } of unsent.values()) list.append(p);
    latest = Math.max(latest, e.seq);
    if (!oldest || e.seq < oldest) oldest = e.seq;
    $("no-messages").hidden = true;
    if (scroll && (wasAtBottom || e.sender === meId)) scrollToBottom();
    scheduleRead();
  }

  // ----- sending -----
  // A client_msg_id: the time first (fixed-width hex milliseconds, like a UUIDv7), then
  // random bits. Time-ordered ids keep the server's idempotency index append-only.
  function randomId() {
    const b = new Uint8Array(10);
    crypto.getRandomValues(b);
    const time = Date.now().toString(16).padStart(12, "0");
    return time + "-w" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  function sendPending(cmid) {
    const p = unsent.get(cmid);
    if (!p) return;
    request({ type: "send", room: roomId, body: p.body, client_msg_id: cmid }, (f) => {
      if (f.type === "sent") {
        // The live `message` normally follows; if we are not subscribed it may not, so the
        // pending item becomes the message now.
        if (unsent.has(cmid)) {
          addEntry({ room: roomId, seq: f.seq, at: Date.now(), sender: meId,
                     sender_name: p.name, body: p.body, client_msg_id: cmid });
        }
      } else if (f.type === "error") {
        p.li.classList.add("failed");
        p.li.classList.remove("pending");
        let status = p.li.querySelector(".status");
        if (!status) {
          status = document.createElement("p");
          status.className = "status";
          p.li.append(status);
        }
        status.textContent = "Not sent: " + f.message;
        unsent.delete(cmid);
      }
    });
  }

  function send() {
    const body = input.value;
    if (!body.trim()) return;
    const cmid = randomId();
    const name = document.querySelector(".me strong")?.textContent || "me";
    const li = messageItem({ sender: meId, sender_name: name, at: Date.now(), body });
    li.classList.add("pending");
    list.append(li);
    scrollToBottom();
    unsent.set(cmid, { body, li, name });
    input.value = "";
    sendPending(cmid); // if the socket is down, it is sent on reconnect
  }

  if (composer) {
    composer.addEventListener("submit", (ev) => {
      ev.preventDefault();
      send();
      input.focus();
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        send();
      }
    });
    input.addEventListener("input", () => {
      const now = Date.now();
      if (input.value && now - lastTyping > 2500) {
        lastTyping = now;
        request({ type: "typing", room: roomId });
      }
    });
  }

  // ----- typing -----
  function renderTyping() {
    const names = [...typists.keys()];
    typingLine.textContent =
      names.length === 0 ? "" :
      names.length === 1 ? `${names[0]} is typing…` :
      `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} are typing…`;
  }

  function someoneTyping(name) {
    clearTimeout(typists.get(name));
    typists.set(name, setTimeout(() => { typists.delete(name); renderTyping(); }, 4000));
    renderTyping();
  }

  // ----- members and presence -----
  function renderMembers(members) {
    const ul = $("members");
    ul.replaceChildren();
    for (const m of members) {
      const li = document.createElement("li");
      li.dataset.user = m.user.id;
      if (m.online) li.classList.add("online");
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.setAttribute("aria-hidden", "true");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = m.user.username;
      const presence = document.createElement("span");
      presence.className = "presence visually-hidden";
      presence.textContent = m.online ? "online" : "offline";
      li.append(dot, " ", name, " ", presence);
      if (m.role !== "member") {
        const role = document.createElement("span");
        role.className = "role";
        role.textContent = m.role;
        li.append(" ", role);
      }
      ul.append(li);
    }
  }

  function setPresence(userId, online) {
    const li = $("members").querySelector(`li[data-user="${userId}"]`);
    if (!li) return;
    li.classList.toggle("online", online);
    li.querySelector(".presence").textContent = online ? "online" : "offline";
  }

  function refreshMembers() {
    request({ type: "members", room: roomId }, (f) => {
      if (f.type === "members") renderMembers(f.members);
    });
  }

  // ----- read markers: what is on screen while the page is visible counts as read -----
  function scheduleRead() {
    if (!isMember || readTimer) return;
    readTimer = setTimeout(() => {
      readTimer = null;
      if (document.visibilityState === "visible" && nearBottom() && latest > readSeq) {
        const seq = latest;
        if (request({ type: "mark_read", room: roomId, seq }, () => {})) readSeq = seq;
      }
    }, 500);
  }
  list.addEventListener("scroll", scheduleRead, { passive: true });
  document.addEventListener("visibilitychange", scheduleRead);
  window.addEventListener("focus", scheduleRead);

  // ----- older history, through the JSON API -----
  async function loadOlder() {
    if (loadingOlder || !hasMore || !oldest) return;
    loadingOlder = true;
    olderButton.disabled = true;
    try {
      const page = await api(`/api/rooms/${roomId}/history?before=${oldest}&limit=50`, null, "GET");
      const before = list.scrollHeight;
      list.setAttribute("aria-busy", "true"); // no announcing old messages as new
      for (const e of page.entries.reverse()) addEntry(e, { scroll: false });
      list.scrollTop += list.scrollHeight - before;
      list.removeAttribute("aria-busy");
      hasMore = page.has_more;
      olderButton.hidden = !hasMore;
    } catch (e) {
      setConn("Could not load older messages: " + e.message, "down");
    } finally {
      loadingOlder = false;
      olderButton.disabled = false;
    }
  }
  olderButton.addEventListener("click", loadOlder);
  list.addEventListener("scroll", () => { if (list.scrollTop < 60) loadOlder(); }, { passive: true });

  // ----- invites -----
  $("make-invite")?.addEventListener("click", async () => {
    showError($("invite-error"), "");
    try {
      const inv = await api(`/api/rooms/${roomId}/invites`, {});
      $("invite-link").value = new URL(inv.url, location.href).href;
      $("invite-out").hidden = false;
      $("invite-link").select();
    } catch (e) {
      showError($("invite-error"), e.message);
    }
  });
  $("copy-invite")?.addEventListener("click", async () => {
    const field = $("invite-link");
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      $("copy-invite").textContent = "Copied";
    } catch {
      $("copy-invite").textContent = "Press Ctrl+C to copy";
    }
  });

  // ----- the socket -----
  function onFrame(f) {
    if (f.id != null && replies.has(f.id)) {
      const handler = replies.get(f.id);
      replies.delete(f.id);
      handler(f);
      if (f.type !== "subscribed") return;
    }
    switch (f.type) {
      case "subscribed":
        for (const e of f.entries) addEntry(e);
        if (f.gap) { hasMore = true; olderButton.hidden = false; }
        break;
      case "message":
        if (f.room === roomId) {
          addEntry(f);
          if (typists.delete(f.sender_name)) renderTyping(); // they finished typing
        }
        break;
      case "presence":
        if (f.room === roomId) setPresence(f.user.id, f.online);
        break;
      case "typing":
        if (f.room === roomId && f.user.id !== meId) someoneTyping(f.user.username);
        break;
      case "member_changed":
        if (f.room === roomId) refreshMembers();
        break;
      case "unsubscribed":
        if (f.room === roomId) {
          setConn(f.reason === "kicked" ? "You were removed from this room" : "You left this room", "down");
          if (composer) composer.hidden = true;
        }
        break;
      case "notice": {
        const li = document.createElement("li");
        li.className = "msg system";
        li.textContent = f.body;
        list.append(li);
        scrollToBottom();
        break;
      }
      case "error":
        if (f.code === "rate_limited") setConn("Slow down: too many requests", "down");
        break;
      default:
        break; // welcome, room, unread, pong, …: nothing to show
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws`, "chat.v1.json");
    setConn("Connecting…", "");
    ws.onopen = () => {
      backoff = 500;
      setConn("Live", "live");
      request({ type: "subscribe", room: roomId, since_seq: latest }, (f) => {
        if (f.type === "error") setConn("Cannot follow this room: " + f.message, "down");
      });
      refreshMembers();
      for (const cmid of unsent.keys()) sendPending(cmid); // same id: stored at most once
    };
    ws.onmessage = (ev) => {
      try {
        onFrame(JSON.parse(ev.data));
      } catch (e) {
        console.error("bad frame", e);
      }
    };
    ws.onclose = (ev) => {
      replies.clear();
      if (ev.code === 4401) {
        setConn("Signed out", "down");
        location.href = "/auth?next=" + encodeURIComponent(location.pathname);
        return;
      }
      const wait = Math.min(backoff, 15000) * (0.75 + Math.random() / 2);
      backoff *= 2;
      setConn(`Offline — reconnecting in ${Math.round(wait / 1000)} s`, "down");
      setTimeout(connect, wait);
    };
  }

  scrollToBottom();
  connect();
  if (input) input.focus();
})();
