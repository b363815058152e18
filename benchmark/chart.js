'use strict'
// A horizontal bar chart of descriptors per second, one group per workload,
// as a standalone SVG. Hand-written: a few dozen lines of SVG need no library.

const COLORS = { c: '#555555', python: '#3572a5', 'node-ipc': '#8cc84b', usocket: '#b07219' }
const FDPASS_COLOR = '#d9480f'
const ROW = 18
const LABEL = 230
const WIDTH = 900
const BAR_MAX = WIDTH - LABEL - 150

const escape = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

function renderChart(results, machine) {
  const groups = [1, 64, 253].map((n) => ({
    title: `${n} descriptor${n === 1 ? '' : 's'} per message`,
    rows: results.filter((r) => r.workload === 'throughput' && r.fdsPerMsg === n).sort((a, b) => b.fdsPerSec - a.fdsPerSec),
  }))
  const max = Math.max(...groups.flatMap((g) => g.rows.map((r) => r.fdsPerSec)))
  const parts = []
  let y = 50
  for (const group of groups) {
    parts.push(`<text x="10" y="${y}" font-weight="bold">${escape(group.title)}</text>`)
    y += 8
    for (const r of group.rows) {
      const w = Math.max(1, (r.fdsPerSec / max) * BAR_MAX)
      const color = r.id.startsWith('fdpass') ? FDPASS_COLOR : (COLORS[r.id] ?? '#888888')
      parts.push(`<text x="${LABEL - 8}" y="${y + 13}" text-anchor="end">${escape(r.system)}</text>`)
      parts.push(`<rect x="${LABEL}" y="${y + 2}" width="${w.toFixed(1)}" height="${ROW - 4}" fill="${color}"/>`)
      parts.push(`<text x="${(LABEL + w + 6).toFixed(1)}" y="${y + 13}">${Math.round(r.fdsPerSec).toLocaleString('en-US')} fds/s</text>`)
      y += ROW
    }
    y += 24
  }
  const subtitle = `${machine.cpus} × ${machine.cpuModel ?? 'cpu'}, ${machine.os}, Node ${machine.node}; medians of ${machine.rounds} runs of ${machine.secondsPerMeasurement} s (npm run bench)`
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">Descriptors passed per second between two processes (higher is better)</text>`,
    `<text x="10" y="36" fill="#555">${escape(subtitle)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n')
}

module.exports = { renderChart }
