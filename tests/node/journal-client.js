// Drives the npm tcp-log-client against a journal server, for tests/test_journal_e2e.py.
// Usage: node journal-client.js <4|6> <port> <writes> <expected entries>
// Writes <writes> entries, reads from index 1 until <expected entries> arrived and the
// server said it is current, then prints {"written": [indices], "read": [{index, entry}], "current": n} and exits.
'use strict'

const [version, port, writes, expected] = process.argv.slice(2).map(Number)
const TCPLogClient = require(`tcp-log-client-${version}`)

const client = new TCPLogClient({
  server: { host: '127.0.0.1', port: port },
  reconnect: { failAfter: 1 }
})
const written = []
const read = []
let current = 0
let finished = false

function finish (code, error) {
  if (finished) return
  finished = true
  if (error) console.error(String(error && (error.stack || JSON.stringify(error))))
  process.stdout.write(JSON.stringify({ written: written, read: read, current: current }) + '\n')
  client.destroy()
  process.exit(code)
}

function maybeDone () {
  if (written.length === writes && read.length >= expected && current > 0) finish(0)
}

setTimeout(function () { finish(1, new Error('timed out')) }, 30000)

client
  .on('error', function (error) { finish(1, error) })
  .on('fail', function () { finish(1, new Error('could not connect')) })
  .on('current', function () { current++; maybeDone() })
  .once('ready', function () {
    for (let n = 0; n < writes; n++) {
      client.write({ client: version, n: n }, function (error, index) {
        if (error) return finish(1, error)
        written.push(index)
        maybeDone()
      })
    }
  })
  .connect()

client.readStream.on('data', function (chunk) {
  read.push({ index: chunk.index, entry: chunk.entry })
  maybeDone()
})
