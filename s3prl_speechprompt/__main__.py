from s3prl_speechprompt.cli import main

if __name__ == "__main__":
    main()
