import type { Persona } from "../api/types";

export function PersonaPicker({
  personas,
  value,
  onChange,
  id = "persona",
}: {
  personas: Persona[];
  value: string | undefined;
  onChange: (personaId: string) => void;
  id?: string;
}) {
  return (
    <div className="field">
      <label htmlFor={id}>Persona</label>
      <select id={id} value={value ?? ""} onChange={(e) => onChange(e.target.value)}>
        <option value="" disabled>
          Choose a persona
        </option>
        {personas
          .filter((p) => p.status === "active")
          .map((p) => (
            <option key={p.id} value={p.id}>
              {p.name} — {p.role}
            </option>
          ))}
      </select>
    </div>
  );
}
