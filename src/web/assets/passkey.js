// Passkey login and enrollment ceremonies in the browser. No inline script (CSP script-src 'self').
(() => {
  const { startAuthentication, startRegistration, browserSupportsWebAuthn } = window.SimpleWebAuthnBrowser;
  const errorBox = document.getElementById('error');

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  async function postJson(url, body) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.error_description || data.error || res.statusText);
    return data;
  }

  async function busy(button, work) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = button.closest('[data-working]')?.dataset.working ?? label;
    errorBox.hidden = true;
    try {
      await work();
    } catch (err) {
      showError(err?.message ? err.message : String(err));
      button.disabled = false;
      button.textContent = label;
    }
  }

  const login = document.getElementById('passkey-login');
  if (login) {
    if (!browserSupportsWebAuthn()) showError(login.dataset.unsupported);
    login.addEventListener('click', () =>
      busy(login, async () => {
        const uid = login.dataset.uid;
        const optionsJSON = await postJson(`/interaction/${uid}/passkey/options`, {});
        const response = await startAuthentication({ optionsJSON });
        const result = await postJson(`/interaction/${uid}/passkey/verify`, response);
        window.location.assign(result.redirectTo);
      }),
    );
  }

  const enroll = document.getElementById('enroll-form');
  if (enroll) {
    if (!browserSupportsWebAuthn()) showError(enroll.dataset.unsupported);
    enroll.addEventListener('submit', (event) => {
      event.preventDefault();
      const button = document.getElementById('enroll-button');
      busy(button, async () => {
        const uid = enroll.dataset.uid;
        const form = new FormData(enroll);
        const optionsJSON = await postJson(`/interaction/${uid}/enroll/options`, {
          customerNumber: form.get('customerNumber'),
          ticket: form.get('ticket'),
        });
        const response = await startRegistration({ optionsJSON });
        await postJson(`/interaction/${uid}/enroll/verify`, {
          response,
          passkeyName: form.get('passkeyName') || undefined,
        });
        window.location.assign(`/interaction/${uid}?enrolled=1`);
      });
    });
  }
})();
