"""HTTP routes the host itself serves (patients, files, health); channels bring their own."""
