// Drives the npm tcp-log-client against a journal whose oldest entries retention has
// deleted, for tests/test_retention_e2e.py.
// Usage: node trimmed-client.js <4|6> <port> <head>
// Reads from index 1 until <head> arrived and the server said it is current, writes one
// entry, then prints {"read": [indices], "notices": [messages], "written": index,
// "current": n} and exits.  6.0.0 reports the server's trimmed notice as an 'error'
// event carrying the message; any other error ends the run.
'use strict'

const [version, port, head] = process.argv.slice(2).map(Number)
const TCPLogClient = require(`tcp-log-client-${version}`)

const client = new TCPLogClient({
  server: { host: '127.0.0.1', port: port },
  reconnect: { failAfter: 1 }
})
const read = []
const notices = []
let current = 0
let written = null
let finished = false

function finish (code, error) {
  if (finished) return
  finished = true
  if (error) console.error(String(error && (error.stack || JSON.stringify(error))))
  process.stdout.write(JSON.stringify({ read, notices, written, current }) + '\n')
  client.destroy()
  process.exit(code)
}

function maybeDone () {
  if (written === null && read.length && read[read.length - 1] === head && current > 0) {
    written = 0
    client.write({ after: 'trim' }, function (error, index) {
      if (error) return finish(1, error)
      written = index
    })
  }
  if (written && read[read.length - 1] === written) finish(0)
}

setTimeout(function () { finish(1, new Error('timed out')) }, 30000)

client
  .on('error', function (error) {
    if (error && error.message && error.message.trimmed) {
      notices.push(error.message)
    } else {
      finish(1, error)
    }
  })
  .on('fail', function () { finish(1, new Error('could not connect')) })
  .on('current', function () { current++; maybeDone() })
  .connect()

client.readStream.on('data', function (chunk) {
  read.push(chunk.index)
  maybeDone()
})
