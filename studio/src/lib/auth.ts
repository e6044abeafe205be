// Whether the API asked for a token (a 401). The app shows the token form then; the form
// posts to /studio/login, which sets the HttpOnly cookie and sends the browser back.
type Listener = (needed: boolean) => void;
const listeners = new Set<Listener>();
let needed = false;

export function signalUnauthorized(): void {
  if (needed) return;
  needed = true;
  listeners.forEach((l) => l(true));
}

export function loginNeeded(): boolean {
  return needed;
}

export function onLoginNeeded(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
