import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip } from "chart.js";
import { useEffect, useRef } from "react";

// Only what a bar chart needs: tree-shaken, and nothing that injects <style> (the CSP forbids it).
Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

export interface DaySeries {
  days: string[];
  series: { label: string; values: number[]; colour: string }[];
}

/** Stacked bars by day. The canvas is described by its label and the table beside it. */
export function UsageChart({ data, label }: { data: DaySeries; label: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: {
        labels: data.days,
        datasets: data.series.map((s) => ({ label: s.label, data: s.values, backgroundColor: s.colour })),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
      },
    });
    return () => chart.destroy();
  }, [data]);
  return (
    <div className="chart">
      <canvas ref={canvas} role="img" aria-label={label} />
    </div>
  );
}
