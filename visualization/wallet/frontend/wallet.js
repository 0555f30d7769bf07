// fedledger wallet component (Streamlit custom component, API version 1), no dependencies.
//
// Streamlit renders this page in an iframe of the dashboard's own origin and sends it
// {type: "streamlit:render", args} messages; args.request is one EIP-1193 request ({id, method, params})
// that Python prepared (the SIWE message to sign, a transaction whose calldata web3 encoded). The request
// runs when the person clicks the button (or at once when args.auto is set, e.g. the sign-in signature
// right after connecting). The answer goes back with streamlit:setComponentValue as
// {id, nonce, ok, result | error}; Python handles each nonce once.
//
// The provider is the one the wallet injects into the page: MetaMask defines window.ethereum in the top
// document, and the component iframe (same origin, sandbox allow-same-origin) reaches it as
// window.parent.ethereum. A wallet that also injects into frames is found as window.ethereum.
(function () {
  "use strict";

  const button = document.getElementById("action");
  const status = document.getElementById("status");
  const AUTO_KEY = "fedledger-wallet-auto-ran";

  let args = {};
  let disabled = false;
  let busy = false;
  let shownRequestId = null;

  function post(type, data) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data || {}), "*");
  }

  function setHeight() {
    const height = Math.ceil(document.getElementById("root").getBoundingClientRect().height) + 2;
    post("streamlit:setFrameHeight", { height: height });
  }

  function reply(value) {
    post("streamlit:setComponentValue", { value: value, dataType: "json" });
  }

  function provider() {
    const candidates = [];
    try { candidates.push(window.parent && window.parent !== window ? window.parent.ethereum : undefined); } catch (e) { /* cross-origin */ }
    candidates.push(window.ethereum);
    try { candidates.push(window.top && window.top !== window ? window.top.ethereum : undefined); } catch (e) { /* cross-origin */ }
    for (const p of candidates) {
      if (p && typeof p.request === "function") return p;
    }
    return null;
  }

  function pageHost() {
    try { return window.top.location.host; } catch (e) { /* cross-origin top */ }
    try { return window.parent.location.host; } catch (e) { /* cross-origin parent */ }
    return window.location.host;
  }

  function autoRan() {
    try { return JSON.parse(window.sessionStorage.getItem(AUTO_KEY) || "[]"); } catch (e) { return []; }
  }

  function markAutoRan(id) {
    const ran = autoRan().filter((x) => x !== id).slice(-49);
    ran.push(id);
    try { window.sessionStorage.setItem(AUTO_KEY, JSON.stringify(ran)); } catch (e) { /* storage off */ }
  }

  function showStatus(text, isError) {
    status.textContent = text || "";
    status.className = isError ? "error" : "";
    setHeight();
  }

  function newNonce() {
    const random = new Uint32Array(2);
    window.crypto.getRandomValues(random);
    return Date.now().toString(36) + "-" + random[0].toString(36) + random[1].toString(36);
  }

  // The session survives a reload: the JWT is kept in a cookie of the dashboard's origin until it expires
  // (Python reads it back on the next run); no wallet is involved.
  const SESSION_COOKIE = "fedledger_session";

  function remember(params) {
    const token = String(params[0] || "");
    const maxAge = Math.max(0, Math.floor(Number(params[1]) || 0));
    const secure = window.top.location.protocol === "https:" ? "; Secure" : "";
    window.top.document.cookie =
      SESSION_COOKIE + "=" + encodeURIComponent(token) + "; Max-Age=" + maxAge + "; Path=/; SameSite=Strict" + secure;
  }

  function forget() {
    window.top.document.cookie = SESSION_COOKIE + "=; Max-Age=0; Path=/; SameSite=Strict";
  }

  async function execute(request) {
    const nonce = newNonce();
    if (request.method === "fedledger_remember" || request.method === "fedledger_forget") {
      try {
        if (request.method === "fedledger_remember") remember(request.params || []);
        else forget();
        reply({ id: request.id, nonce: nonce, ok: true, result: true });
      } catch (err) {
        reply({ id: request.id, nonce: nonce, ok: false, error: { code: "storage", message: String(err) } });
      }
      return;
    }
    const eth = provider();
    if (!eth) {
      const message = "No Ethereum wallet in this browser: install MetaMask (or another EIP-1193 wallet) and reload.";
      showStatus(message, true);
      reply({ id: request.id, nonce: nonce, ok: false, error: { code: "no_provider", message: message } });
      return;
    }
    busy = true;
    update();
    showStatus(args.pending || "Waiting for your wallet…", false);
    try {
      let result;
      if (request.method === "fedledger_connect") {
        // Connect = accounts (the wallet asks the person) + the chain it is on, in one answer.
        // Plus the host the person opened (the page the wallet sees): the sign-in message names it, as
        // EIP-4361 wallets expect the message's domain to be the requesting origin.
        const accounts = await eth.request({ method: "eth_requestAccounts" });
        const chainId = await eth.request({ method: "eth_chainId" });
        result = { accounts: accounts, chainId: chainId, host: pageHost() };
      } else {
        result = await eth.request({ method: request.method, params: request.params || [] });
      }
      showStatus("", false);
      reply({ id: request.id, nonce: nonce, ok: true, result: result });
    } catch (err) {
      const code = err && err.code !== undefined ? err.code : "error";
      const message = (err && err.message) || String(err);
      showStatus(code === 4001 ? "Rejected in the wallet." : message, true);
      reply({ id: request.id, nonce: nonce, ok: false, error: { code: code, message: message } });
    } finally {
      busy = false;
      update();
    }
  }

  function applyTheme(theme) {
    if (!theme) return;
    const style = document.documentElement.style;
    if (theme.primaryColor) style.setProperty("--primary", theme.primaryColor);
    if (theme.textColor) style.setProperty("--text", theme.textColor);
    if (theme.font) style.setProperty("--font", theme.font);
  }

  function update() {
    const request = args.request || null;
    if (args.hidden) {
      // A bookkeeping request (the session cookie): nothing to show.
      document.getElementById("root").style.display = "none";
      post("streamlit:setFrameHeight", { height: 0 });
      return;
    }
    button.textContent = args.label || "Connect wallet";
    button.className = args.kind === "secondary" ? "secondary" : "";
    button.disabled = disabled || busy || !request || !!args.disabled;
    button.title = args.help || "";
    if (request) {
      button.dataset.method = request.method;
      button.dataset.requestId = request.id;
    }
    setHeight();
  }

  function onRender(data) {
    args = data.args || {};
    disabled = !!data.disabled;
    applyTheme(data.theme);
    const request = args.request || null;
    const requestId = request ? request.id : null;
    if (requestId !== shownRequestId) {
      shownRequestId = requestId;
      showStatus(args.caption || "", false);
    }
    update();
    if (request && args.auto && !busy && autoRan().indexOf(request.id) < 0) {
      markAutoRan(request.id);
      execute(request);
    }
  }

  button.addEventListener("click", function () {
    const request = args.request || null;
    if (request && !busy) execute(request);
  });

  window.addEventListener("message", function (event) {
    // Only the dashboard page that embeds this frame may drive it.
    if (event.source !== window.parent) return;
    const data = event.data;
    if (data && data.type === "streamlit:render") onRender(data);
  });

  window.addEventListener("resize", setHeight);
  post("streamlit:componentReady", { apiVersion: 1 });
})();
