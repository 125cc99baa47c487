from latentrec.cli import main

main()
