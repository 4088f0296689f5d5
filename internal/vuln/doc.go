// Package vuln matches software packages against an offline OSV vulnerability database.
//
// Import reads OSV JSON as osv.dev publishes it (a directory tree or a zip per ecosystem) into a
// local database indexed by (ecosystem, package), so a scan reads only the advisories of the
// packages it finds. Versions are compared with each ecosystem's own rules (osv-scalibr's
// semantic package: Debian, semver, PEP 440, Maven, ...). Inventory (what an image holds) lives
// in vuln/inventory, network exposure in vuln/exposure; this package joins them into ranked
// findings.
package vuln
