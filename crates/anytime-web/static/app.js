// Anytime web UI: renders what the wasm core (pkg/anytime_web.js, built from crates/anytime-web)
// reports, and turns clicks and keys into its commands. No protocol, no cryptography and no
// message storage here: those live in the Rust core, the same one the terminal client uses.

import init, { openApp } from "/pkg/anytime_web.js";
import { h, toast, call, time, dayKey, dayLabel, avatar, presenceText, dialog, field } from "/dom.js";
import * as tools from "/message_tools.js";
import * as wallet from "/wallet.js";
import * as files from "/files.js";

const root = document.getElementById("root");
let app = null;
let account = null;
const ui = {
  open: null, // conv id of the open chat
  replyTo: null, // { msg_id, text }
  editing: null, // msg_id
  lastTyping: 0,
  renderQueued: false,
  lastTimelineHtml: "",
  limit: 0, // timeline entries shown in the open chat (pages of PAGE)
  include: null, // a message the open chat must show (a search result)
  jumpTo: null, // scroll to this message once rendered
  firstUnread: undefined, // the unread divider's message, fixed when the chat opened
  query: "", // message search
  keepScroll: null,
  showRequests: false, // the chat list shows message requests instead of chats
  showArchived: false, // … or the archived chats // distance from the bottom to keep while earlier messages load
};
const PAGE = 50;

// This browser's own chat settings: drafts, pinned, muted and archived chats. Kept beside the
// encrypted store's data in the same origin, per account, and deleted on log out.
const prefs = {
  key: () => `anytime-chat-prefs:${account?.user}`,
  data: { drafts: {}, pinned: [], muted: [], archived: [], noPreviews: false },
  load() {
    try { this.data = { ...this.data, ...JSON.parse(localStorage.getItem(this.key()) || "{}") }; } catch (_) { /* start over */ }
  },
  save() { localStorage.setItem(this.key(), JSON.stringify(this.data)); },
  has(list, conv) { return this.data[list].includes(conv); },
  toggle(list, conv) {
    this.data[list] = this.has(list, conv) ? this.data[list].filter((c) => c !== conv) : [...this.data[list], conv];
    this.save();
  },
  draft(conv, text) {
    if (text) this.data.drafts[conv] = text; else delete this.data.drafts[conv];
    this.save();
  },
  wipe() { localStorage.removeItem(this.key()); },
};

// ---------------------------------------------------------------- sign up / log in

function renderAuth(mode = "register") {
  root.setAttribute("aria-busy", "false");
  const submit = async (event) => {
    event.preventDefault();
    const form = event.target;
    const username = form.username.value.trim();
    const password = form.password.value;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const response = await fetch(mode === "register" ? "/v1/register" : "/v1/login", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username, password, device_name: `Web (${navigator.platform || "browser"})` }),
      });
      const body = await response.text();
      if (!response.ok) {
        let message = body;
        try { message = JSON.parse(body).message; } catch (_) { /* plain text */ }
        throw new Error(message);
      }
      const enrolled = await call(app.enroll(location.origin, username, body));
      if (enrolled.pending) {
        toast(`Approve this browser from one of your devices with the code ${enrolled.pending}`);
      }
      start();
    } catch (error) {
      toast(error.message || String(error), true);
      button.disabled = false;
    }
  };
  const other = mode === "register" ? "login" : "register";
  root.replaceChildren(h("main", { class: "auth" },
    h("h1", {}, "Anytime"),
    h("p", { class: "muted" }, "End-to-end encrypted: the server cannot read your chats."),
    h("form", { onsubmit: submit, "aria-label": mode === "register" ? "Sign up" : "Log in" },
      h("h2", {}, mode === "register" ? "Create an account" : "Log in"),
      field("Username", { id: "username", name: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 32, autofocus: true }),
      field("Password", { id: "password", name: "password", type: "password", autocomplete: mode === "register" ? "new-password" : "current-password", required: true, minlength: 8 }),
      h("button", { type: "submit" }, mode === "register" ? "Sign up" : "Log in")),
    h("button", { class: "link", type: "button", onclick: () => renderAuth(other) },
      mode === "register" ? "I already have an account: log in" : "New here? Create an account")));
}

// ---------------------------------------------------------------- main screen

function start() {
  account = JSON.parse(app.account());
  prefs.load();
  tools.setup({ app, ui, prefs, openChat, startReply, startEdit, deleteMessage, queueRender });
  wallet.setup({ app, account, name: (user) => (user && app.nameOf(user)) || "someone" });
  files.setup({ app, queueRender });
  app.start((kind, conv) => onChange(kind, conv));
  // Endpoints can change: refresh the registration when notifications are already allowed.
  if ("Notification" in window && Notification.permission === "granted") subscribePush().catch(() => {});
  renderShell();
  const join = new URLSearchParams(location.hash.slice(1)).get("join");
  if (join) {
    history.replaceState(null, "", "/");
    call(app.join(join)).then((r) => { toast("Joined the group"); openChat(r.conv); }).catch(() => {});
  }
}

function onChange(kind, conv) {
  if (kind === "signed_out") {
    toast("This device was signed out", true);
    prefs.wipe();
    app.logout().finally(() => location.reload());
    return;
  }
  const muted = conv && prefs.has("muted", conv);
  if (kind === "message" && !muted && document.hidden && "Notification" in window && Notification.permission === "granted") {
    new Notification("Anytime", { body: "New message", tag: "anytime-new-message" });
  }
  if (kind === "message" && conv === ui.open && !document.hidden) queueMarkRead();
  if (kind === "timeline" || kind === "chats") ui.searched = null;
  queueRender();
}

function queueRender() {
  if (ui.renderQueued) return;
  ui.renderQueued = true;
  requestAnimationFrame(() => { ui.renderQueued = false; renderChats(); renderChat(); renderStatus(); });
}

// "typing…" expires without an event: re-render while any is shown.
let typingTimer = null;
function refreshWhileTyping(anyTyping) {
  if (anyTyping && !typingTimer) typingTimer = setTimeout(() => { typingTimer = null; queueRender(); }, 1000);
}

let markReadTimer = null;
function queueMarkRead() {
  clearTimeout(markReadTimer);
  markReadTimer = setTimeout(() => { if (ui.open) app.markRead(ui.open).catch(() => {}); }, 150);
}

document.addEventListener("visibilitychange", () => { if (!document.hidden && ui.open) queueMarkRead(); });

function renderShell() {
  root.setAttribute("aria-busy", "false");
  root.replaceChildren(
    h("div", { class: "layout", id: "layout" },
      h("nav", { class: "sidebar", "aria-label": "Chats" },
        h("header", { class: "bar" },
          h("h1", {}, "Anytime"),
          h("span", { id: "status", class: "status", "aria-live": "polite" })),
        h("div", { class: "toolbar" },
          h("button", { type: "button", onclick: newDirect }, "New chat"),
          h("button", { type: "button", onclick: newGroup }, "New group"),
          h("button", { type: "button", onclick: joinDialog }, "Join"),
          h("button", { type: "button", class: "secondary", onclick: tools.starredDialog, "aria-label": "Starred messages" }, "★ Starred")),
        h("div", { class: "search" },
          h("label", { for: "search-input", class: "visually-hidden" }, "Search messages"),
          h("input", { id: "search-input", type: "search", placeholder: "Search messages", autocomplete: "off",
            oninput: (ev) => { ui.query = ev.target.value; queueRender(); } })),
        h("ul", { id: "chat-list", class: "chat-list" }),
        h("footer", { class: "toolbar" },
          h("span", { class: "muted" }, account.username),
          h("button", { type: "button", class: "secondary", onclick: wallet.walletDialog }, "Wallet"),
          h("button", { type: "button", class: "secondary", onclick: devicesDialog }, "Devices"),
          h("button", { type: "button", class: "secondary", onclick: settingsDialog }, "Settings"))),
      h("main", { class: "conversation", id: "conversation", "aria-label": "Conversation" },
        h("p", { class: "empty muted" }, "Pick a chat, or start one with “New chat”."))));
  queueRender();
}

function renderStatus() {
  const el = document.getElementById("status");
  if (!el) return;
  const status = app.status();
  el.textContent = status === "online" ? "" : status.startsWith("offline") ? "offline, reconnecting…" : status === "connecting" ? "connecting…" : status;
}

// Searching reads the index in IndexedDB: the newest query wins when answers cross.
async function renderSearch(list) {
  const query = ui.query;
  if (ui.searched?.query === query) {
    if (ui.searched.shown) return;
  } else {
    ui.searched = { query, results: null, shown: false };
    const results = await call(app.search(query));
    if (ui.searched?.query !== query) return;
    ui.searched.results = results;
  }
  const results = ui.searched.results;
  if (!results) return;
  ui.searched.shown = true;
  list.setAttribute("aria-label", "Search results");
  list.replaceChildren(...results.map((r) => h("li", {}, h("button", {
    type: "button", class: "chat result", "data-conv": r.conv, "data-msg": r.msg_id,
    "aria-label": `${r.title}, ${r.sender}: ${r.text}`,
    onclick: () => openChat(r.conv, r.msg_id),
  }, h("span", { class: "title" }, r.title), h("span", { class: "time" }, time(r.at)),
  h("span", { class: "preview" }, `${r.sender}: `, highlight(r.text, ui.query))))));
  if (!results.length) list.append(h("li", { class: "muted empty" }, "No messages found on this device"));
  const unindexed = app.unindexed();
  if (unindexed) list.append(h("li", { class: "muted empty" }, `Still adding about ${unindexed} older messages to the search index…`));
}

function highlight(text, query) {
  const at = text.toLowerCase().indexOf(query.trim().toLowerCase());
  if (at < 0 || !query.trim()) return text;
  const end = at + query.trim().length;
  return [text.slice(0, at), h("mark", {}, text.slice(at, end)), text.slice(end)];
}

function renderChats() {
  const list = document.getElementById("chat-list");
  if (!list) return;
  if (ui.query.trim()) { renderSearch(list); return; }
  list.removeAttribute("aria-label");
  const all = JSON.parse(app.chats());
  const requests = all.filter((c) => c.request);
  if (!requests.length) ui.showRequests = false;
  const archived = all.filter((c) => !c.request && prefs.has("archived", c.conv));
  if (!archived.length) ui.showArchived = false;
  const shown = all.filter((c) => ui.showRequests ? c.request
    : !c.request && prefs.has("archived", c.conv) === Boolean(ui.showArchived));
  // Pinned chats first, each group newest activity first (the core's order).
  const chats = [...shown.filter((c) => prefs.has("pinned", c.conv)), ...shown.filter((c) => !prefs.has("pinned", c.conv))];
  refreshWhileTyping(chats.some((c) => c.typing.length));
  const focused = document.activeElement && document.activeElement.dataset.conv;
  list.replaceChildren(...chats.map((c) => {
    const last = c.last ? `${c.last.own ? "You" : c.last.sender}: ${c.last.text}` : "No messages yet";
    const draft = c.conv !== ui.open && prefs.data.drafts[c.conv];
    const sub = c.typing.length ? `${c.typing.join(", ")} typing…` : draft ? `Draft: ${draft}` : last;
    const pinned = prefs.has("pinned", c.conv);
    const muted = prefs.has("muted", c.conv);
    const button = h("button", {
      type: "button", class: "chat" + (c.conv === ui.open ? " active" : ""), "data-conv": c.conv,
      "aria-current": c.conv === ui.open ? "true" : null,
      "aria-label": `${c.title}${pinned ? ", pinned" : ""}${muted ? ", muted" : ""}${c.unread ? `, ${c.unread} unread` : ""}${c.mentions ? ", you were mentioned" : ""}. ${sub}`,
      onclick: () => openChat(c.conv),
    },
    avatar(c.title),
    h("span", { class: "title" }, c.title,
      c.presence && c.presence.online ? h("span", { class: "dot", title: "online" }) : null,
      pinned ? h("span", { class: "flag", title: "pinned", "data-flag": "pinned" }, " 📌") : null,
      muted ? h("span", { class: "flag", title: "muted", "data-flag": "muted" }, " 🔕") : null),
    h("span", { class: "time" }, c.last ? time(c.last.at) : ""),
    h("span", { class: "preview" + (draft && !c.typing.length ? " draft" : "") }, sub),
    h("span", { class: "badges" },
      c.mentions ? h("span", { class: "badge mention", "data-testid": "mention", title: "You were mentioned" }, "@") : null,
      c.unread ? h("span", { class: "badge" + (muted ? " muted" : ""), "data-testid": "unread" }, String(c.unread)) : null));
    return h("li", {}, button);
  }));
  if (ui.showRequests) {
    list.prepend(h("li", { class: "requests-head" },
      h("button", { type: "button", class: "secondary", onclick: () => { ui.showRequests = false; queueRender(); } }, "← All chats"),
      h("p", { class: "muted" }, "People you have not talked with yet. They can't see that you read their messages until you accept.")));
  } else if (ui.showArchived) {
    list.prepend(h("li", { class: "requests-head" },
      h("button", { type: "button", class: "secondary", onclick: () => { ui.showArchived = false; queueRender(); } }, "← All chats")));
  } else if (requests.length) {
    list.prepend(h("li", {}, h("button", {
      type: "button", class: "requests-entry", "data-testid": "requests",
      onclick: () => { ui.showRequests = true; queueRender(); },
    }, `Message requests (${requests.length})`)));
  }
  if (!ui.showRequests && !ui.showArchived && archived.length) {
    list.append(h("li", {}, h("button", {
      type: "button", class: "requests-entry archived-entry", "data-testid": "archived",
      onclick: () => { ui.showArchived = true; queueRender(); },
    }, `Archived (${archived.length})`)));
  }
  if (!chats.length) list.append(h("li", { class: "muted empty" }, "No chats yet"));
  if (focused) list.querySelector(`[data-conv="${CSS.escape(focused)}"]`)?.focus();
}

async function openChat(conv, focusMsg = null) {
  // A search hit or a starred message may be in an older part of the history than is loaded.
  if (focusMsg) await call(app.reveal(conv, focusMsg));
  ui.open = conv;
  ui.replyTo = null;
  ui.editing = null;
  ui.lastTimelineHtml = "";
  ui.limit = PAGE;
  ui.include = focusMsg;
  ui.jumpTo = focusMsg;
  ui.firstUnread = undefined;
  document.getElementById("layout")?.classList.add("show-chat");
  renderChatFrame();
  const input = document.getElementById("composer-input");
  if (input) input.value = prefs.data.drafts[conv] || "";
  queueRender();
  queueMarkRead();
  input?.focus();
}

function closeChat() {
  ui.open = null;
  document.getElementById("layout")?.classList.remove("show-chat");
  const main = document.getElementById("conversation");
  main.replaceChildren(h("p", { class: "empty muted" }, "Pick a chat, or start one with “New chat”."));
  queueRender();
  document.querySelector(".chat")?.focus();
}

function renderChatFrame() {
  const main = document.getElementById("conversation");
  const composer = h("form", { class: "composer", onsubmit: submitComposer },
    h("div", { id: "composer-context", class: "composer-context", "aria-live": "polite" }),
    h("label", { for: "composer-input", class: "visually-hidden" }, "Message"),
    h("textarea", { id: "composer-input", rows: 1, placeholder: "Message", autocomplete: "off", onkeydown: composerKey, oninput: composerInput }),
    h("div", { id: "upload-status", class: "upload-status muted", "aria-live": "polite" }),
    h("div", { class: "composer-buttons" },
      ...files.attachButton(() => ui.open),
      h("button", { type: "button", class: "secondary", "aria-label": "Money", title: "Send, request or split money",
        onclick: () => { const chat = JSON.parse(app.chat(ui.open, 1)); if (chat) wallet.moneyMenu(chat); } }, "💸"),
      h("button", { type: "submit", "aria-label": "Send" }, "Send")));
  main.replaceChildren(
    h("header", { class: "bar chat-header" },
      h("button", { type: "button", class: "back secondary", "aria-label": "Back to chats", onclick: closeChat }, "←"),
      h("div", { class: "heading" }, h("h2", { id: "chat-title" }), h("span", { id: "chat-sub", class: "muted" })),
      h("button", { type: "button", class: "secondary", id: "info-button", onclick: infoDialog }, "Info")),
    h("div", { id: "safety-banner" }),
    h("div", { id: "request-banner" }),
    h("ol", { id: "timeline", class: "timeline", role: "log", "aria-live": "polite", "aria-label": "Messages", tabindex: "0", onscroll: updateJump }),
    h("button", { type: "button", id: "jump-unread", class: "jump", hidden: true, onclick: () => scrollToEntry("unread-divider", "start") }, "↑ First unread"),
    composer);
}

function renderChat() {
  if (!ui.open) return;
  const chat = JSON.parse(app.chat(ui.open, ui.limit, ui.include ?? undefined));
  if (!chat) { closeChat(); return; }
  const opening = ui.firstUnread === undefined;
  if (opening) {
    // The divider stays where the unread messages began while the chat is open, even after
    // they are marked read; keep every entry shown now on the page.
    ui.firstUnread = chat.first_unread;
    ui.limit = Math.max(ui.limit, chat.entries.length);
  }
  ui.members = chat.members;
  document.getElementById("chat-title").textContent = chat.title;
  const sub = chat.typing.length ? `${chat.typing.join(", ")} typing…`
    : chat.kind === "direct" ? presenceText(chat.presence) : `${chat.members.length} members`;
  document.getElementById("chat-sub").textContent = sub;
  const banner = document.getElementById("safety-banner");
  banner.replaceChildren(chat.safety_changed ? h("p", { class: "warning", role: "alert" },
    `${chat.title}'s safety number changed: a device was added or removed. Compare it again in Info.`) : "");
  renderRequest(chat);
  const timeline = document.getElementById("timeline");
  const html = JSON.stringify(chat.entries) + ui.replyTo?.msg_id + ui.editing + ui.firstUnread + chat.more + chat.newer + wallet.paymentChecks() + files.state();
  if (html === ui.lastTimelineHtml) return;
  ui.lastTimelineHtml = html;
  const atBottom = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 40;
  const focusedId = document.activeElement?.closest?.(".message")?.dataset.msg;
  const focusedAction = document.activeElement?.dataset?.action;
  const items = [];
  if (chat.more) {
    items.push(h("li", { class: "more" }, h("button", { type: "button", class: "secondary", onclick: loadEarlier }, "Load earlier messages")));
  }
  let lastDay = null;
  let lastSender = null;
  for (const e of chat.entries) {
    if (e.at && dayKey(e.at) !== lastDay) {
      lastDay = dayKey(e.at);
      lastSender = null;
      items.push(h("li", { class: "day", role: "separator" }, dayLabel(e.at)));
    }
    if (ui.firstUnread && e.msg_id === ui.firstUnread) {
      lastSender = null;
      items.push(h("li", { class: "unread-divider", id: "unread-divider", role: "separator" }, "Unread messages"));
    }
    const firstOfRun = e.kind !== "notice" && e.sender !== lastSender;
    lastSender = e.kind === "notice" ? null : e.sender;
    items.push(renderEntry(chat, e, chat.kind === "group" && !e.own && firstOfRun));
  }
  if (chat.newer) {
    // A search hit far back in a long chat is shown in a page of its own.
    items.push(h("li", { class: "more" }, h("button", { type: "button", class: "secondary", onclick: jumpToNewest }, "Jump to the newest messages")));
  }
  timeline.replaceChildren(...items);
  // Reaction actions carry another user's text: escape it before it goes into a selector.
  if (focusedId && focusedAction) {
    timeline.querySelector(`[data-msg="${CSS.escape(focusedId)}"] [data-action="${CSS.escape(focusedAction)}"]`)?.focus();
  }
  if (ui.jumpTo) {
    const target = timeline.querySelector(`[data-msg="${CSS.escape(ui.jumpTo)}"]`);
    ui.jumpTo = null;
    if (target) {
      target.classList.add("highlight");
      target.scrollIntoView({ block: "center" });
      ui.limit = Math.max(ui.limit, chat.entries.length);
      return;
    }
  }
  if (ui.keepScroll) {
    // Earlier messages were added above: keep the reader where they were.
    timeline.scrollTop = timeline.scrollHeight - ui.keepScroll;
    ui.keepScroll = null;
  } else if (opening && ui.firstUnread) {
    scrollToEntry("unread-divider", "start");
  } else if (atBottom || !focusedId) {
    timeline.scrollTop = timeline.scrollHeight;
  }
  updateJump();
}

// A message request: accept, delete or block, before anything is read or written.
function renderRequest(chat) {
  const banner = document.getElementById("request-banner");
  document.querySelector("#conversation .composer").hidden = chat.request;
  if (!chat.request) { banner.replaceChildren(); return; }
  if (banner.dataset.conv === chat.conv && banner.childElementCount) return;
  banner.dataset.conv = chat.conv;
  const who = chat.kind === "direct" ? chat.title : "Someone you have not talked with";
  banner.replaceChildren(h("section", { class: "request", "aria-label": "Message request" },
    h("p", {}, `${who} wants to message you. They won't know you've seen their messages until you accept.`),
    h("div", { class: "row" },
      h("button", { type: "button", onclick: async () => { await call(app.accept(chat.conv)); ui.showRequests = false; queueRender(); } }, "Accept"),
      h("button", { type: "button", class: "secondary", onclick: async () => { await call(app.decline(chat.conv, false)); closeChat(); toast("Request deleted"); } }, "Delete"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Block ${who}? They will not be able to message you.`)) return;
        await call(app.decline(chat.conv, true)); closeChat(); toast("Blocked");
      } }, "Block"))));
}

function scrollToEntry(id, block) {
  document.getElementById(id)?.scrollIntoView({ block });
  updateJump();
}

// "First unread" is offered while the divider is out of sight.
function updateJump() {
  const button = document.getElementById("jump-unread");
  const divider = document.getElementById("unread-divider");
  if (!button) return;
  if (!divider) { button.hidden = true; return; }
  const d = divider.getBoundingClientRect();
  const t = document.getElementById("timeline").getBoundingClientRect();
  button.hidden = d.bottom > t.top && d.top < t.bottom;
}

function jumpToNewest() {
  ui.include = null;
  ui.limit = PAGE;
  ui.keepScroll = null;
  document.activeElement?.blur?.();
  queueRender();
}

async function loadEarlier() {
  const conv = ui.open;
  // Older chunks of a long history come from IndexedDB first.
  await call(app.loadEarlier(conv, ui.limit + PAGE));
  if (ui.open !== conv) return;
  const timeline = document.getElementById("timeline");
  ui.keepScroll = timeline.scrollHeight - timeline.scrollTop;
  ui.limit += PAGE;
  queueRender();
}

const STATUS_TEXT = { pending: "waiting for the connection", sending: "sending", sent: "✓ sent", delivered: "✓✓ delivered", read: "✓✓ read" };

function renderEntry(chat, e, withAvatar) {
  if (e.kind === "notice") return h("li", { class: "notice", "data-msg": e.msg_id }, e.text);
  const classes = ["message", e.own ? "own" : "theirs", e.deleted ? "deleted" : "", e.kind].join(" ");
  const reactions = e.reactions.map((r) => h("button", {
    type: "button", class: "reaction" + (r.mine ? " mine" : ""), "data-action": `reaction-${r.emoji}`,
    "aria-pressed": r.mine ? "true" : "false", "aria-label": `${r.emoji} ${r.count}`,
    onclick: () => call(app.react(chat.conv, e.msg_id, r.emoji, r.mine)),
  }, `${r.emoji} ${r.count}`));
  const actions = e.deleted || e.kind === "undecryptable" || e.status === "pending" ? null : h("div", { class: "actions", role: "group", "aria-label": "Message actions" },
    h("button", { type: "button", "data-action": "reply", onclick: () => startReply(e) }, "Reply"),
    h("button", { type: "button", "data-action": "react", "aria-label": "React with thumbs up", onclick: () => call(app.react(chat.conv, e.msg_id, "👍", e.reactions.some((r) => r.emoji === "👍" && r.mine))) }, "👍"),
    h("button", { type: "button", "data-action": "react-heart", "aria-label": "React with heart", onclick: () => call(app.react(chat.conv, e.msg_id, "❤️", e.reactions.some((r) => r.emoji === "❤️" && r.mine))) }, "❤️"),
    e.own ? h("button", { type: "button", "data-action": "edit", onclick: () => startEdit(e) }, "Edit") : null,
    e.own ? h("button", { type: "button", "data-action": "delete", onclick: () => deleteMessage(chat.conv, e) }, "Delete") : null,
    h("button", { type: "button", "data-action": "more", "aria-label": "More actions", "aria-haspopup": "menu",
      onclick: (ev) => tools.openMenu(chat, e, ev.currentTarget) }, "⋯"));
  const grouped = chat.kind === "group" && !e.own ? " in-group" : "";
  const li = h("li", { class: classes + grouped + (withAvatar ? " with-avatar" : "") + (e.mentions_me ? " mentions-me" : ""), "data-msg": e.msg_id, "data-seq": e.seq },
    withAvatar ? avatar(e.sender) : null,
    h("div", { class: "meta" }, e.own ? "You" : e.sender, e.at ? [" · ", h("time", {}, time(e.at))] : null,
      e.edited ? h("span", { class: "edited" }, " · edited") : null,
      e.starred ? h("span", { class: "star", title: "Starred", "aria-label": "starred" }, " ★") : null),
    e.forwarded ? h("div", { class: "forwarded muted" }, "↪ Forwarded") : null,
    e.reply ? h("blockquote", { class: "quote" }, h("strong", {}, e.reply.sender), " ", e.reply.text) : null,
    e.payment && !e.deleted ? wallet.paymentBody(e, queueRender, chat) : null,
    e.attachment && !e.deleted ? files.attachmentBody(chat, e) : null,
    e.deleted || !(e.payment || e.attachment) || e.text ? h("p", { class: "text" }, e.deleted ? "This message was deleted" : tools.textWithMentions(e)) : null,
    e.preview && !e.deleted ? tools.previewCard(e.preview) : null,
    reactions.length ? h("div", { class: "reactions" }, reactions) : null,
    e.own ? h("span", { class: "receipt", "data-status": e.status }, STATUS_TEXT[e.status] || "") : null,
    actions);
  if (actions) tools.menuGestures(li, chat, e);
  return li;
}

function setComposerContext(text) {
  const box = document.getElementById("composer-context");
  box.replaceChildren(text ? h("span", {}, text, " ", h("button", { type: "button", class: "link", onclick: cancelContext }, "Cancel")) : "");
}

function startReply(e) {
  ui.editing = null;
  ui.replyTo = { msg_id: e.msg_id, text: e.text };
  setComposerContext(`Replying to ${e.own ? "yourself" : e.sender}: ${e.text.slice(0, 60)}`);
  document.getElementById("composer-input").focus();
}

function startEdit(e) {
  ui.replyTo = null;
  ui.editing = e.msg_id;
  const input = document.getElementById("composer-input");
  input.value = e.text;
  setComposerContext("Editing your message");
  input.focus();
}

function cancelContext() {
  ui.replyTo = null;
  ui.editing = null;
  document.getElementById("composer-input").value = "";
  setComposerContext("");
}

async function deleteMessage(conv, e) {
  if (!confirm("Delete this message for everyone?")) return;
  await call(app.delete(conv, e.msg_id));
  toast("Message deleted");
}

function composerKey(event) {
  if (tools.pickerKey(event)) return;
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    event.target.form.requestSubmit();
  } else if (event.key === "Escape") {
    cancelContext();
  }
}

function composerInput(event) {
  tools.updatePicker(event.target);
  if (ui.open && !ui.editing) prefs.draft(ui.open, event.target.value);
  const now = Date.now();
  if (ui.open && now - ui.lastTyping > 3000) {
    ui.lastTyping = now;
    app.typing(ui.open).catch(() => {});
  }
}

async function submitComposer(event) {
  event.preventDefault();
  const input = document.getElementById("composer-input");
  const text = input.value.trim();
  if (!text || !ui.open) return;
  const conv = ui.open;
  input.value = "";
  try {
    tools.closePicker();
    if (ui.editing) await call(app.edit(conv, ui.editing, text));
    else {
      const sent = await call(app.send(conv, text, ui.replyTo ? ui.replyTo.msg_id : undefined));
      if (!sent.pending) tools.sendPreview(conv, sent.msg_id, text);
    }
    prefs.draft(conv, "");
    ui.replyTo = null;
    ui.editing = null;
    setComposerContext("");
  } catch (_) {
    input.value = text; // keep what the user typed
  }
  input.focus();
}

// ---------------------------------------------------------------- dialogs for chats

function newDirect() {
  const d = dialog("New chat", field("Username", { id: "direct-username", name: "username", required: true, autocomplete: "off" }),
    h("button", { type: "submit", value: "ok", onclick: async (ev) => {
      ev.preventDefault();
      const name = d.querySelector("#direct-username").value.trim();
      if (!name) return;
      const r = await call(app.direct(name));
      d.close();
      openChat(r.conv);
    } }, "Start chat"));
}

function newGroup() {
  const d = dialog("New group", [
    field("Group name", { id: "group-name", required: true, autocomplete: "off" }),
    field("Members (usernames, separated by commas)", { id: "group-members", autocomplete: "off" }),
  ], h("button", { type: "submit", value: "ok", onclick: async (ev) => {
    ev.preventDefault();
    const name = d.querySelector("#group-name").value.trim();
    const members = d.querySelector("#group-members").value.split(",").map((m) => m.trim()).filter(Boolean);
    if (!name) return;
    const r = await call(app.group(name, members));
    d.close();
    openChat(r.conv);
  } }, "Create group"));
}

function joinDialog() {
  const d = dialog("Join a group", field("Invite link or code", { id: "join-code", required: true, autocomplete: "off" }),
    h("button", { type: "submit", value: "ok", onclick: async (ev) => {
      ev.preventDefault();
      const code = d.querySelector("#join-code").value.trim();
      if (!code) return;
      const r = await call(app.join(code));
      d.close();
      toast("Joined: a member's device adds this one to the encryption group");
      openChat(r.conv);
    } }, "Join"));
}

const TIMERS = [[0, "Off"], [30, "30 seconds"], [300, "5 minutes"], [3600, "1 hour"], [86400, "1 day"], [604800, "1 week"]];

// Pin, mute, archive: this browser's settings for a chat.
function chatSettings(chat, d) {
  const toggle = (list, on, off) => h("button", {
    type: "button", class: "secondary", "aria-pressed": prefs.has(list, chat.conv) ? "true" : "false",
    onclick: () => { prefs.toggle(list, chat.conv); d.close(); queueRender(); toast(prefs.has(list, chat.conv) ? on : off); },
  }, prefs.has(list, chat.conv) ? { pinned: "Unpin chat", muted: "Unmute", archived: "Unarchive" }[list]
    : { pinned: "Pin chat", muted: "Mute", archived: "Archive" }[list]);
  return h("div", { class: "row chat-settings" },
    toggle("pinned", "Pinned to the top", "Unpinned"),
    toggle("muted", "Muted: no notifications", "Unmuted"),
    toggle("archived", "Archived", "Back among your chats"));
}

function timerField(chat) {
  const select = h("select", { id: "timer", onchange: async (ev) => {
    await call(app.setTimer(chat.conv, Number(ev.target.value)));
    toast("Disappearing messages updated");
  } }, TIMERS.map(([s, label]) => h("option", { value: s, selected: s === chat.timer_seconds }, label)));
  return h("div", { class: "field" }, h("label", { for: "timer" }, "Disappearing messages"), select);
}

async function infoDialog() {
  const chat = JSON.parse(app.chat(ui.open, 1));
  if (!chat) return;
  if (chat.kind === "direct") return contactDialog(chat);
  const conv = chat.conv;
  const memberItems = chat.members.map((m) => h("li", {},
    h("span", {}, m.name, m.admin ? " (admin)" : "", m.me ? " (you)" : ""),
    chat.me_admin && !m.me ? h("span", { class: "row" },
      h("button", { type: "button", class: "secondary", onclick: async () => { await call(app.setAdmin(conv, m.user, !m.admin)); d.close(); infoDialog(); } }, m.admin ? "Remove admin" : "Make admin"),
      h("button", { type: "button", class: "secondary", onclick: async () => { await call(app.removeMember(conv, m.user)); d.close(); infoDialog(); } }, "Remove")) : null));
  const inviteOut = h("output", { id: "invite-link", class: "invite" });
  const d = dialog(chat.title, [
    h("div", { id: "chat-settings-slot" }),
    chat.me_admin ? h("div", { class: "row" },
      field("Group name", { id: "rename", value: chat.name }),
      h("button", { type: "button", onclick: async () => { await call(app.rename(conv, d.querySelector("#rename").value.trim())); toast("Renamed"); } }, "Rename")) : null,
    h("h3", {}, "Members"),
    h("ul", { class: "members" }, memberItems),
    chat.me_admin ? h("div", { class: "row" },
      field("Add members (usernames, commas)", { id: "add-members", autocomplete: "off" }),
      h("button", { type: "button", onclick: async () => {
        const names = d.querySelector("#add-members").value.split(",").map((m) => m.trim()).filter(Boolean);
        await call(app.addMembers(conv, names)); d.close(); infoDialog();
      } }, "Add")) : null,
    chat.me_admin ? h("div", { class: "row" },
      h("button", { type: "button", id: "create-invite", onclick: async () => {
        const r = await call(app.invite(conv));
        inviteOut.textContent = `${location.origin}/#join=${r.code}`;
      } }, "Create invite link"), inviteOut) : null,
    timerField(chat),
  ], h("button", { type: "button", class: "danger", onclick: async () => {
    if (!confirm("Leave this group?")) return;
    await call(app.leave(conv)); d.close(); closeChat();
  } }, "Leave group"));
  d.querySelector("#chat-settings-slot").replaceWith(chatSettings(chat, d));
}

async function contactDialog(chat) {
  const safety = await call(app.safety(chat.conv));
  const state = safety.changed ? "CHANGED since you verified it: compare it again"
    : safety.verified ? "Verified" : "Not verified";
  const d = dialog(chat.title, [
    h("p", {}, presenceText(chat.presence)),
    h("h3", {}, "Safety number"),
    h("p", { class: "muted" }, "Compare these digits with your contact in person or on a call. If they match, nobody is in the middle."),
    h("pre", { class: "safety", id: "safety-number" }, safety.digits.replace(/\s+/g, "").match(/.{1,5}/g).join(" ")),
    h("p", { id: "safety-state", class: safety.changed ? "warning" : "" }, state),
    timerField(chat),
    h("div", { id: "chat-settings-slot" }),
  ], h("button", { type: "button", onclick: async () => { await call(app.verify(chat.conv)); d.close(); toast("Marked as verified"); } }, "Mark as verified"));
  d.querySelector("#chat-settings-slot").replaceWith(chatSettings(chat, d));
}

async function devicesDialog() {
  const devices = await call(app.devices());
  const d = dialog("Linked devices", [
    h("ul", { class: "members" }, devices.map((dev) => h("li", {},
      h("span", {}, dev.name, dev.current ? " (this browser)" : "", dev.approved ? "" : " (waiting for approval)"),
      dev.current ? null : h("button", { type: "button", class: "secondary", onclick: async () => {
        if (!confirm(`Unlink ${dev.name}? It will not be able to read anything sent afterwards.`)) return;
        await call(app.revoke(dev.device)); d.close(); toast("Device unlinked");
      } }, "Unlink")))),
    h("div", { class: "row" },
      field("Link a new device: its approval code", { id: "approve-code", autocomplete: "off" }),
      h("button", { type: "button", onclick: async () => { await call(app.approve(d.querySelector("#approve-code").value)); d.close(); toast("Device approved"); } }, "Approve")),
  ], null);
}

function settingsDialog() {
  const radios = [["everyone", "Everyone"], ["contacts", "My contacts"], ["nobody", "Nobody"]].map(([value, label]) =>
    h("label", { class: "radio" }, h("input", { type: "radio", name: "presence", value, onchange: async () => {
      await call(app.setPresencePrivacy(value)); toast("Saved");
    } }), label));
  dialog("Settings", [
    h("fieldset", {}, h("legend", {}, "Who sees when I am online"), radios),
    h("fieldset", {}, h("legend", {}, "Link previews"),
      h("label", { class: "radio" }, h("input", { type: "checkbox", id: "link-previews", checked: !prefs.data.noPreviews, onchange: (ev) => {
        prefs.data.noPreviews = !ev.target.checked; prefs.save(); toast("Saved");
      } }), "Make previews of links I send (this browser fetches the page; the site sees your address)")),
    h("fieldset", {}, h("legend", {}, "Notifications"),
      h("button", { type: "button", class: "secondary", onclick: enableNotifications }, "Enable notifications")),
    h("p", { class: "muted" }, `Signed in as ${account.username} (device ${account.device}).`),
  ], h("button", { type: "button", class: "danger", onclick: async () => {
    if (!confirm("Log out? Your chats on this browser are deleted.")) return;
    await app.logout().catch(() => {});
    prefs.wipe();
    location.reload();
  } }, "Log out"));
}

async function enableNotifications() {
  if (!("Notification" in window)) { toast("This browser has no notifications", true); return; }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") { toast("Notifications blocked in the browser settings", true); return; }
  try {
    await subscribePush();
    toast("Notifications on, also when Anytime is closed");
  } catch (error) {
    toast(`Notifications on while Anytime is open; push unavailable: ${error.message || error}`, true);
  }
}

// Web Push: the browser's push service wakes the service worker, which shows "New message".
// The server only learns the endpoint; pushes carry no content.
async function subscribePush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) throw new Error("this browser has no Web Push");
  const registration = await navigator.serviceWorker.ready;
  const { public_key: key } = await (await fetch("/v1/push/key")).json();
  const raw = Uint8Array.from(atob(key.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const subscription = await registration.pushManager.getSubscription()
    || await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: raw });
  const response = await fetch("/v1/push/endpoint", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${app.sessionToken()}` },
    body: JSON.stringify({ endpoint: subscription.endpoint }),
  });
  if (!response.ok) throw new Error((await response.json()).message);
}

// ---------------------------------------------------------------- boot

async function boot() {
  try {
    await init();
    app = await openApp(() => root.replaceChildren(h("main", { class: "auth" }, h("h1", {}, "Anytime"),
      h("p", { role: "status", "data-testid": "open-elsewhere" },
        "Anytime is open in another tab. Use it there; this tab takes over when that one is closed."))));
  } catch (error) {
    root.replaceChildren(h("main", { class: "auth" }, h("h1", {}, "Anytime"),
      h("p", { role: "alert" }, `This browser cannot run Anytime: ${error}`)));
    return;
  }
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
  window.anytime = app; // for the browser tests and the curious
  if (app.account()) start();
  else renderAuth("register");
}

boot();
