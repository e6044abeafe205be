// Shown when the API answers 401: the token goes to /studio/login in a plain form post, so
// the server sets an HttpOnly, SameSite=Strict cookie (script never sees it) and sends the
// browser back to the page it was on.
export function Login() {
  const next = location.pathname + location.search;
  const failed = new URLSearchParams(location.search).has("login_failed");
  return (
    <div class="login">
      <form class="login-card" method="post" action="/studio/login">
        <h1>Sign in to the studio</h1>
        <p class="muted">
          This Runstream API asks for a token. Paste an API token (<span class="mono">RUNSTREAM_TOKEN</span>, or
          a workspace token from <span class="mono">RUNSTREAM_WORKSPACE_TOKENS</span>). It is kept in an
          HttpOnly cookie for this site only.
        </p>
        {failed && <div class="banner banner-error">That token was not accepted.</div>}
        <label class="field">
          <span>Token</span>
          <input type="password" name="token" autocomplete="current-password" required autofocus />
        </label>
        <input type="hidden" name="next" value={next} />
        <button class="btn btn-primary" type="submit">Sign in</button>
      </form>
    </div>
  );
}
