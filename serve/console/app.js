// ragtune console: sign in, show what the key's role may use, switch pages.
import { $, ApiFailure, KEY, api, can, clear, guarded, hooks, showError, state, stopTimers } from "./core.js";
import * as chat from "./chat.js";
import * as documents from "./documents.js";
import * as adapters from "./adapters.js";
import * as compare from "./compare.js";
import * as health from "./health.js";

async function identify() {
  try {
    const me = await api("GET", "/v1/whoami");
    state.role = me.role;
    $("who").textContent = me.auth === "none" ? "no keys (local): admin" : `${me.key_id} · ${me.role}`;
    $("signout").hidden = me.auth === "none";
    $("login").hidden = true;
    $("nav").hidden = false;
    for (const node of document.querySelectorAll("[data-role]")) {
      node.hidden = !can(node.dataset.role);
    }
    const wanted = location.hash.slice(1);
    const button = document.querySelector(`nav [data-page="${CSS.escape(wanted)}"]`);
    show(button && !button.hidden ? wanted : "chat");
  } catch (e) {
    state.role = null;
    $("login").hidden = false;
    $("nav").hidden = true;
    if (e instanceof ApiFailure && e.status === 401) {
      if (sessionStorage.getItem(KEY)) { sessionStorage.removeItem(KEY); showError(e); }
    } else {
      showError(e);
    }
  }
}

function signOut(reason) {
  sessionStorage.removeItem(KEY);
  state.role = null;
  for (const page of document.querySelectorAll(".page")) page.hidden = true;
  stopTimers();
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  if (reason) showError(reason);
}

const PAGES = {
  chat: chat.loadModels, documents: documents.loadDocuments, adapters: adapters.loadAdapters,
  compare: compare.loadComparisons, health: health.startHealth,
};

function show(name) {
  state.page = name;
  stopTimers();
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.page === name);
  history.replaceState(null, "", `#${name}`);
  guarded(PAGES[name])();
}


// ---- start -------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.page));
  $("login-form").addEventListener("submit", guarded(async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    clear($("errors"));
    await identify();
  }));
  $("signout").addEventListener("click", () => signOut());
  for (const module of [chat, documents, adapters, compare]) module.wire();
  hooks.unauthorized = signOut;
  identify();
});
