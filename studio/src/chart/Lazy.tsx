// Renders its children once the box scrolls near the viewport (and keeps them): a page of
// many charts asks for the data of the visible ones only.
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

export function Lazy({ height, children, class: cls }: { height: number; children: ComponentChildren; class?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [seen, setSeen] = useState(false);
  useEffect(() => {
    const el = box.current;
    if (!el || seen) return;
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) {
        setSeen(true);
        observer.disconnect();
      }
    }, { rootMargin: "300px 0px" });
    observer.observe(el);
    return () => observer.disconnect();
  }, [seen]);
  return (
    <div ref={box} class={cls ? `lazy ${cls}` : "lazy"} data-lazy={seen ? "shown" : "waiting"} style={seen ? undefined : { minHeight: `${height}px` }}>
      {seen ? children : null}
    </div>
  );
}
